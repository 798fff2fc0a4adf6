#include "ops/ops.h"
#include "ops/training_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace vlmzoo::ops {

namespace {
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
using OptTensor = std::optional<at::Tensor>;
}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("vlmzoo::rms_norm");
  return op.call(x, weight, eps);
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                const at::Tensor& weight, double eps) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&, double)>("vlmzoo::add_rms_norm");
  return op.call(x, residual, weight, eps);
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias, double eps) {
  static auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double)>("vlmzoo::layer_norm");
  return op.call(x, weight, bias, eps);
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& weight, const OptTensor& bias, double eps) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                              const OptTensor&, double)>("vlmzoo::add_layer_norm");
  return op.call(x, residual, weight, bias, eps);
}

at::Tensor bias_act(const at::Tensor& x, const OptTensor& bias, const std::string& act) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const OptTensor&, c10::string_view)>("vlmzoo::bias_act");
  return op.call(x, bias, act);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& weight, double eps, const OptTensor& grad_sum) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                              double, const OptTensor&)>("vlmzoo::rms_norm_backward");
  return op.call(grad, x, weight, eps, grad_sum);
}

std::tuple<at::Tensor, at::Tensor> act_backward(const at::Tensor& grad, const at::Tensor& x, const OptTensor& bias,
                                                const OptTensor& up, const std::string& act) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                                              const OptTensor&, c10::string_view)>("vlmzoo::act_backward");
  return op.call(grad, x, bias, up, act);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                 int64_t ignore_index) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t)>(
      "vlmzoo::cross_entropy");
  return op.call(logits, labels, ignore_index);
}

at::Tensor cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                  const at::Tensor& lse, int64_t ignore_index) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      int64_t)>("vlmzoo::cross_entropy_backward");
  return op.call(grad, logits, labels, lse, ignore_index);
}

at::Tensor gated_act(const at::Tensor& gate, const at::Tensor& up, const std::string& act) {
  static auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>("vlmzoo::gated_act");
  return op.call(gate, up, act);
}

std::tuple<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                        const at::Tensor& sin) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&, const at::Tensor&)>("vlmzoo::rope");
  return op.call(q, k, cos, sin);
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& allowed,
                     std::optional<double> scale) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                                      std::optional<double>)>("vlmzoo::attention");
  return op.call(q, k, v, allowed, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out, const OptTensor& allowed,
                                                                  double scale) {
  static auto op = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const OptTensor&, double)>("vlmzoo::attention_backward");
  return op.call(grad, q, k, v, out, allowed, scale);
}

at::Tensor multiway_linear(const at::Tensor& x, int64_t split, const at::Tensor& weight_a, const OptTensor& bias_a,
                           const at::Tensor& weight_b, const OptTensor& bias_b) {
  static auto op = find_op<at::Tensor(const at::Tensor&, int64_t, const at::Tensor&, const OptTensor&,
                                      const at::Tensor&, const OptTensor&)>("vlmzoo::multiway_linear");
  return op.call(x, split, weight_a, bias_a, weight_b, bias_b);
}

at::Tensor multiway_layer_norm(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                               const OptTensor& bias_a, const at::Tensor& weight_b, const OptTensor& bias_b,
                               double eps) {
  static auto op = find_op<at::Tensor(const at::Tensor&, int64_t, const at::Tensor&, const OptTensor&,
                                      const at::Tensor&, const OptTensor&, double)>("vlmzoo::multiway_layer_norm");
  return op.call(x, split, weight_a, bias_a, weight_b, bias_b, eps);
}

at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& packed_weight, int64_t out_features,
                       const OptTensor& bias) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, const OptTensor&)>(
      "vlmzoo::linear_bf16");
  return op.call(x, packed_weight, out_features, bias);
}

at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& packed_weight, const at::Tensor& scales,
                       const at::Tensor& col_sums, const OptTensor& bias) {
  static auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const OptTensor&)>("vlmzoo::linear_int8");
  return op.call(x, packed_weight, scales, col_sums, bias);
}

}  // namespace vlmzoo::ops
