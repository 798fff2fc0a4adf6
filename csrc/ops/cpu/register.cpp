// CPU implementations of the vlmzoo ops: check, then run the kernel of the copy cpu/dispatch.cpp
// picked for this CPU (or the reference, on a CPU with none of the instruction sets built).
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/cpu/dispatch.h"
#include "ops/linear_formats.h"
#include "ops/reference.h"

namespace vlmzoo::ops::cpu {
namespace {
using OptTensor = std::optional<at::Tensor>;

// The kernels hold weights in acc_t of the input; a wider weight (say float64 on float32) is left to the reference.
bool weight_fits(const at::Tensor& x, const at::Tensor& weight) {
  auto out = rms_norm_out_type(x, weight);
  return out == x.scalar_type() || (out == at::kFloat && x.scalar_type() != at::kDouble);
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_norm("vlmzoo::rms_norm", x, weight, std::nullopt);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr || !weight_fits(x, weight)) return reference_rms_norm(x, weight, eps).contiguous();
  return std::get<1>(kernels->rms_norm(x, at::Tensor(), weight, eps));
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                    const at::Tensor& weight, double eps) {
  check_add_rms_norm(x, residual, weight);
  // Mixed x / residual: the kernel takes the float32-accumulated pairs (sum and output float32).
  const bool fits = residual.scalar_type() == x.scalar_type()
                        ? weight_fits(x, weight)
                        : rms_norm_out_type(add_rms_norm_sum_type(x, residual), weight) == at::kFloat;
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr || !fits) {
    auto [sum, normed] = reference_add_rms_norm(x, residual, weight, eps);
    return {sum.contiguous(), normed.contiguous()};
  }
  return kernels->rms_norm(x, residual, weight, eps);
}

at::Tensor layer_norm_cpu(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias, double eps) {
  check_norm("vlmzoo::layer_norm", x, weight, bias);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) return reference_layer_norm(x, weight, bias, eps).contiguous();
  const int64_t tokens = x.dim() >= 2 ? x.size(-2) : 1;
  return std::get<1>(kernels->layer_norm(x, at::Tensor(), tokens, tokens, weight, bias, weight, bias, eps));
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                      const at::Tensor& weight, const OptTensor& bias, double eps) {
  check_norm("vlmzoo::add_layer_norm", x, weight, bias, &residual);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) {
    auto [sum, normed] = reference_add_layer_norm(x, residual, weight, bias, eps);
    return {sum.contiguous(), normed.contiguous()};
  }
  const int64_t tokens = x.dim() >= 2 ? x.size(-2) : 1;
  return kernels->layer_norm(x, residual, tokens, tokens, weight, bias, weight, bias, eps);
}

at::Tensor multiway_layer_norm_cpu(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                   const OptTensor& bias_a, const at::Tensor& weight_b, const OptTensor& bias_b,
                                   double eps) {
  check_multiway("vlmzoo::multiway_layer_norm", x, split, weight_a, bias_a, weight_b, bias_b, /*linear=*/false);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr)
    return reference_multiway_layer_norm(x, split, weight_a, bias_a, weight_b, bias_b, eps).contiguous();
  return std::get<1>(kernels->layer_norm(x, at::Tensor(), x.size(1), split, weight_a, bias_a, weight_b, bias_b, eps));
}

at::Tensor bias_act_cpu(const at::Tensor& x, const OptTensor& bias, c10::string_view act) {
  const Act kind = parse_act(act);
  check_bias_act(x, bias);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) return reference_bias_act(x, bias, std::string(act)).contiguous();
  return kernels->bias_act(x, bias, kind);
}

at::Tensor gated_act_cpu(const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
  const Act kind = parse_act(act);
  check_gated_act(gate, up);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) return reference_gated_act(gate, up, std::string(act)).contiguous();
  return kernels->gated_act(gate, up, kind);
}

std::tuple<at::Tensor, at::Tensor> rope_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                            const at::Tensor& sin) {
  check_rope(q, k, cos, sin);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) {
    auto [qr, kr] = reference_rope(q, k, cos, sin);
    return {qr.contiguous(), kr.contiguous()};
  }
  return kernels->rope(q, k, cos, sin);
}

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& allowed,
                         std::optional<double> scale) {
  check_attention(q, k, v, allowed);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) return reference_attention(q, k, v, allowed, scale).contiguous();
  return kernels->attention(q, k, v, allowed, attention_scale(q, scale));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cpu(const at::Tensor& grad, const at::Tensor& q,
                                                                      const at::Tensor& k, const at::Tensor& v,
                                                                      const at::Tensor& out, const OptTensor& allowed,
                                                                      double scale) {
  check_attention_backward(grad, q, k, v, out, allowed);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr) {
    auto [dq, dk, dv] = reference_attention_backward(grad, q, k, v, out, allowed, scale);
    return {dq.contiguous(), dk.contiguous(), dv.contiguous()};
  }
  return kernels->attention_backward(grad, q, k, v, out, allowed, scale);
}

// The linear kernels take float32 rows and a float32 bias; other dtypes are converted around them.
OptTensor float_bias(const OptTensor& bias) {
  return bias.has_value() ? OptTensor(bias->to(at::kFloat).contiguous()) : bias;
}
at::Tensor linear_result(const at::Tensor& rows_out, const at::Tensor& x) {
  auto shape = x.sizes().vec();
  shape.back() = rows_out.size(1);
  return rows_out.view(shape).to(x.scalar_type());
}

at::Tensor linear_bf16_cpu(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                           const OptTensor& bias) {
  check_linear_bf16(x, packed, out_features, bias);
  const Kernels* kernels = active_kernels();
  // float64 (gradcheck) stays in float64 through the reference.
  if (kernels == nullptr || kernels->linear_bf16 == nullptr || x.scalar_type() == at::kDouble)
    return reference_linear_bf16(x, packed, out_features, bias).contiguous();
  auto out = kernels->linear_bf16(as_rows(x.to(at::kFloat)), packed, out_features, float_bias(bias));
  return linear_result(out, x);
}

at::Tensor linear_int8_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                           const at::Tensor& col_sums, const OptTensor& bias) {
  check_linear_int8(x, packed, scales, col_sums, bias);
  const Kernels* kernels = active_kernels();
  if (kernels == nullptr || kernels->linear_int8 == nullptr || !cpu_has_avx512_vnni())
    return reference_linear_int8(x, packed, scales, col_sums, bias).contiguous();
  auto out = kernels->linear_int8(as_rows(x.to(at::kFloat)), packed, scales.contiguous(), col_sums.contiguous(),
                                  float_bias(bias));
  return linear_result(out, x);
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("add_rms_norm", &add_rms_norm_cpu);
  m.impl("layer_norm", &layer_norm_cpu);
  m.impl("add_layer_norm", &add_layer_norm_cpu);
  m.impl("multiway_layer_norm", &multiway_layer_norm_cpu);
  m.impl("bias_act", &bias_act_cpu);
  m.impl("gated_act", &gated_act_cpu);
  m.impl("rope", &rope_cpu);
  m.impl("attention", &attention_cpu);
  m.impl("attention_backward", &attention_backward_cpu);
  m.impl("linear_bf16", &linear_bf16_cpu);
  m.impl("linear_int8", &linear_int8_cpu);
}

}  // namespace vlmzoo::ops::cpu
