#pragma once
// The CPU kernels of the training ops (ops/training_ops.h), a table of their own beside kernels.h's:
// compiled once per instruction set like every kernel file, picked by active_training_kernels()
// (cpu/register_training.cpp) at the level cpu/dispatch.cpp chose.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ops/checks.h"

namespace vlmzoo::ops::cpu {

// rms_norm's gradients: (dx (+ grad_sum), dweight); grad, x, weight and grad_sum share one dtype.
using RmsNormBackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& grad, const at::Tensor& x,
                                                             const at::Tensor& weight, double eps,
                                                             const std::optional<at::Tensor>& grad_sum);
// Gradients of bias_act / gated_act at a = x (+ bias): (grad (* up) * act'(a), grad * act(a) when up is given).
using ActBackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& grad, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& bias,
                                                         const std::optional<at::Tensor>& up, Act act);
// logits [..., V] (unit stride along V), labels [...] int64 -> (loss, lse) [...] in acc_t; rows labelled
// ignore_index get 0 for both. The backward writes dlogits [..., V] = grad * (softmax - one_hot).
using CrossEntropyFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& logits, const at::Tensor& labels,
                                                          int64_t ignore_index);
using CrossEntropyBackwardFn = at::Tensor(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                          const at::Tensor& lse, int64_t ignore_index);

struct TrainingKernels {
  RmsNormBackwardFn* rms_norm_backward;
  ActBackwardFn* act_backward;
  CrossEntropyFn* cross_entropy;
  CrossEntropyBackwardFn* cross_entropy_backward;
};

// The kernels of the active level (cpu/dispatch.h), null for the references.
const TrainingKernels* active_training_kernels();

namespace avx512 {
extern const TrainingKernels training_kernels;
}
namespace avx2 {
extern const TrainingKernels training_kernels;
}
namespace baseline {
extern const TrainingKernels training_kernels;
}

#ifdef VLMZOO_CPU_ISA_NS
namespace VLMZOO_CPU_ISA_NS {
RmsNormBackwardFn rms_norm_backward;
ActBackwardFn act_backward;
CrossEntropyFn cross_entropy;
CrossEntropyBackwardFn cross_entropy_backward;
}  // namespace VLMZOO_CPU_ISA_NS
#endif

}  // namespace vlmzoo::ops::cpu
