// CPU implementations of the training ops (ops/training_ops.h): check, then run the kernel of the copy
// cpu/dispatch.cpp picked for this CPU (or the reference, on a CPU with none of the instruction sets
// built). CMake defines VLMZOO_CPU_KERNELS_<ISA> for each copy built, as for dispatch.cpp.
#include <torch/library.h>

#include "ops/cpu/dispatch.h"
#include "ops/cpu/training_kernels.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops::cpu {

const TrainingKernels* active_training_kernels() {
  switch (active_isa()) {
#ifdef VLMZOO_CPU_KERNELS_AVX512
    case Isa::avx512: return &avx512::training_kernels;
#endif
#ifdef VLMZOO_CPU_KERNELS_AVX2
    case Isa::avx2: return &avx2::training_kernels;
#endif
#ifdef VLMZOO_CPU_KERNELS_BASELINE
    case Isa::baseline: return &baseline::training_kernels;
#endif
    default: return nullptr;
  }
}

namespace {
using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                         const at::Tensor& weight, double eps,
                                                         const OptTensor& grad_sum) {
  check_rms_norm_backward(grad, x, weight, grad_sum);
  const TrainingKernels* kernels = active_training_kernels();
  const auto type = x.scalar_type();  // the kernel takes one dtype throughout; mixed ones go to the reference
  if (kernels == nullptr || grad.scalar_type() != type || weight.scalar_type() != type ||
      (grad_sum.has_value() && grad_sum->scalar_type() != type)) {
    auto [dx, dweight] = reference_rms_norm_backward(grad, x, weight, eps, grad_sum);
    return {dx.contiguous(), dweight.contiguous()};
  }
  return kernels->rms_norm_backward(grad, x, weight, eps, grad_sum);
}

std::tuple<at::Tensor, at::Tensor> act_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const OptTensor& bias,
                                                    const OptTensor& up, c10::string_view act) {
  const Act kind = parse_act(act);
  check_act_backward(grad, x, bias, up);
  const TrainingKernels* kernels = active_training_kernels();
  if (kernels == nullptr) {
    auto [dx, dup] = reference_act_backward(grad, x, bias, up, std::string(act));
    return {dx.contiguous(), dup.defined() ? dup.contiguous() : dup};
  }
  return kernels->act_backward(grad, x, bias, up, kind);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_cpu(const at::Tensor& logits, const at::Tensor& labels,
                                                     int64_t ignore_index) {
  check_cross_entropy(logits, labels, ignore_index, /*check_labels=*/true);
  const TrainingKernels* kernels = active_training_kernels();
  if (kernels == nullptr) return reference_cross_entropy(logits, labels, ignore_index);
  return kernels->cross_entropy(logits, labels, ignore_index);
}

at::Tensor cross_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                      const at::Tensor& lse, int64_t ignore_index) {
  check_cross_entropy_backward(grad, logits, labels, lse);
  const TrainingKernels* kernels = active_training_kernels();
  if (kernels == nullptr) return reference_cross_entropy_backward(grad, logits, labels, lse, ignore_index).contiguous();
  return kernels->cross_entropy_backward(grad, logits, labels,
                                         lse.to(at::promote_types(logits.scalar_type(), at::kFloat)), ignore_index);
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CPU, m) {
  m.impl("rms_norm_backward", &rms_norm_backward_cpu);
  m.impl("act_backward", &act_backward_cpu);
  m.impl("cross_entropy", &cross_entropy_cpu);
  m.impl("cross_entropy_backward", &cross_entropy_backward_cpu);
}

}  // namespace vlmzoo::ops::cpu
