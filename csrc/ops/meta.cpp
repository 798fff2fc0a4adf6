// Meta kernels: checks and output shapes only, so fake tensors and torch.compile can trace the ops.
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/linear_formats.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops {
namespace {
using OptTensor = std::optional<at::Tensor>;

at::Tensor rms_norm_meta(const at::Tensor& x, const at::Tensor& weight, double) {
  check_norm("vlmzoo::rms_norm", x, weight, std::nullopt);
  return empty_contiguous(x, rms_norm_out_type(x, weight));
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_meta(const at::Tensor& x, const at::Tensor& residual,
                                                     const at::Tensor& weight, double) {
  check_add_rms_norm(x, residual, weight);
  const auto sum_type = add_rms_norm_sum_type(x, residual);
  return {empty_contiguous(x, sum_type), empty_contiguous(x, rms_norm_out_type(sum_type, weight))};
}

at::Tensor layer_norm_meta(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias, double) {
  check_norm("vlmzoo::layer_norm", x, weight, bias);
  return empty_contiguous(x);
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_meta(const at::Tensor& x, const at::Tensor& residual,
                                                       const at::Tensor& weight, const OptTensor& bias, double) {
  check_norm("vlmzoo::add_layer_norm", x, weight, bias, &residual);
  return {empty_contiguous(x), empty_contiguous(x)};
}

at::Tensor bias_act_meta(const at::Tensor& x, const OptTensor& bias, c10::string_view act) {
  parse_act(act);
  check_bias_act(x, bias);
  return empty_contiguous(x);
}

at::Tensor gated_act_meta(const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
  parse_act(act);
  check_gated_act(gate, up);
  return empty_contiguous(gate);
}

std::tuple<at::Tensor, at::Tensor> rope_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                             const at::Tensor& sin) {
  check_rope(q, k, cos, sin);
  return {empty_contiguous(q), empty_contiguous(k)};
}

at::Tensor attention_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& allowed,
                          std::optional<double>) {
  check_attention(q, k, v, allowed);
  return empty_contiguous(q);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_meta(const at::Tensor& grad, const at::Tensor& q,
                                                                       const at::Tensor& k, const at::Tensor& v,
                                                                       const at::Tensor& out, const OptTensor& allowed,
                                                                       double) {
  check_attention_backward(grad, q, k, v, out, allowed);
  return {empty_contiguous(q), empty_contiguous(k), empty_contiguous(v)};
}

at::Tensor multiway_linear_meta(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                const OptTensor& bias_a, const at::Tensor& weight_b, const OptTensor& bias_b) {
  check_multiway("vlmzoo::multiway_linear", x, split, weight_a, bias_a, weight_b, bias_b, /*linear=*/true);
  return at::empty_symint({x.sym_size(0), x.sym_size(1), weight_a.sym_size(0)}, x.options());
}

at::Tensor multiway_layer_norm_meta(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                    const OptTensor& bias_a, const at::Tensor& weight_b, const OptTensor& bias_b,
                                    double) {
  check_multiway("vlmzoo::multiway_layer_norm", x, split, weight_a, bias_a, weight_b, bias_b, /*linear=*/false);
  return empty_contiguous(x);
}

at::Tensor linear_bf16_meta(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                            const OptTensor& bias) {
  check_linear_bf16(x, packed, out_features, bias);
  return at::empty_symint(linear_out_shape(x, out_features), x.options());
}

at::Tensor linear_int8_meta(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                            const at::Tensor& col_sums, const OptTensor& bias) {
  check_linear_int8(x, packed, scales, col_sums, bias);
  return at::empty_symint(linear_out_shape(x, scales.sym_size(0)), x.options());
}
std::tuple<at::Tensor, at::Tensor> rms_norm_backward_meta(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, double, const OptTensor& grad_sum) {
  check_rms_norm_backward(grad, x, weight, grad_sum);
  return {empty_contiguous(x), empty_contiguous(weight)};
}

std::tuple<at::Tensor, at::Tensor> act_backward_meta(const at::Tensor& grad, const at::Tensor& x, const OptTensor& bias,
                                                     const OptTensor& up, c10::string_view act) {
  parse_act(act);
  check_act_backward(grad, x, bias, up);
  return {empty_contiguous(x), up.has_value() ? empty_contiguous(x) : at::Tensor()};
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_meta(const at::Tensor& logits, const at::Tensor& labels,
                                                      int64_t ignore_index) {
  check_cross_entropy(logits, labels, ignore_index, /*check_labels=*/false);
  const auto type = at::promote_types(logits.scalar_type(), at::kFloat);
  return {empty_contiguous(labels, type), empty_contiguous(labels, type)};
}

at::Tensor cross_entropy_backward_meta(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                       const at::Tensor& lse, int64_t) {
  check_cross_entropy_backward(grad, logits, labels, lse);
  return empty_contiguous(logits);
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, Meta, m) {
  m.impl("act_backward", &act_backward_meta);
  m.impl("rms_norm_backward", &rms_norm_backward_meta);
  m.impl("cross_entropy", &cross_entropy_meta);
  m.impl("cross_entropy_backward", &cross_entropy_backward_meta);
  m.impl("rms_norm", &rms_norm_meta);
  m.impl("add_rms_norm", &add_rms_norm_meta);
  m.impl("layer_norm", &layer_norm_meta);
  m.impl("add_layer_norm", &add_layer_norm_meta);
  m.impl("bias_act", &bias_act_meta);
  m.impl("gated_act", &gated_act_meta);
  m.impl("rope", &rope_meta);
  m.impl("attention", &attention_meta);
  m.impl("attention_backward", &attention_backward_meta);
  m.impl("multiway_linear", &multiway_linear_meta);
  m.impl("multiway_layer_norm", &multiway_layer_norm_meta);
  m.impl("linear_bf16", &linear_bf16_meta);
  m.impl("linear_int8", &linear_int8_meta);
}

}  // namespace vlmzoo::ops
