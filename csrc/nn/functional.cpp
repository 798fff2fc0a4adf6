#include "nn/functional.h"

#include "ops/ops.h"
#include "ops/reference.h"

namespace vlmzoo::nn {

namespace {
std::optional<torch::Tensor> optional(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}
}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool fused) {
  return fused ? ops::rms_norm(x, weight, eps) : ops::reference_rms_norm(x, weight, eps);
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                                     const torch::Tensor& weight, double eps, bool fused) {
  auto [sum, normed] = fused ? ops::add_rms_norm(x, residual, weight, eps)
                             : ops::reference_add_rms_norm(x, residual, weight, eps);
  return {sum, normed};
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         double eps, bool fused) {
  return fused ? ops::layer_norm(x, weight, optional(bias), eps)
               : ops::reference_layer_norm(x, weight, optional(bias), eps);
}

torch::Tensor activation(const torch::Tensor& x, const std::string& name, bool fused) {
  return fused ? ops::bias_act(x, std::nullopt, name) : ops::reference_activation(x, name);
}

torch::Tensor gated_activation(const torch::Tensor& gate, const torch::Tensor& up, const std::string& name,
                               bool fused) {
  return fused ? ops::gated_act(gate, up, name) : ops::reference_gated_act(gate, up, name);
}

std::pair<torch::Tensor, torch::Tensor> apply_rope(const torch::Tensor& q, const torch::Tensor& k,
                                                   const torch::Tensor& cos, const torch::Tensor& sin,
                                                   bool fused) {
  auto [q_out, k_out] = fused ? ops::rope(q, k, cos, sin) : ops::reference_rope(q, k, cos, sin);
  return {q_out, k_out};
}

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& allowed, double scale) {
  return ops::reference_attention(q, k, v, optional(allowed), scale);
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& allowed, double scale, bool fused) {
  return fused ? ops::attention(q, k, v, optional(allowed), scale) : attention_reference(q, k, v, allowed, scale);
}

}  // namespace vlmzoo::nn
