#include "nn/functional.h"

#include <cmath>

namespace vlmzoo::nn {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool fused) {
  auto x32 = x.to(torch::kFloat32);
  auto normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                                     const torch::Tensor& weight, double eps, bool fused) {
  auto sum = x + residual;
  return {sum, rms_norm(sum, weight, eps, fused)};
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         double eps, bool fused) {
  return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

torch::Tensor activation(const torch::Tensor& x, const std::string& name, bool fused) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "gelu_tanh") return torch::gelu(x, "tanh");
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  if (name == "relu") return torch::relu(x);
  if (name == "relu2") return torch::relu(x).square();
  if (name == "silu") return torch::silu(x);
  TORCH_CHECK_VALUE(false, "unknown activation \"", name, "\"");
}

torch::Tensor gated_activation(const torch::Tensor& gate, const torch::Tensor& up, const std::string& name,
                               bool fused) {
  return activation(gate, name, fused) * up;
}

namespace {
torch::Tensor rotate_half(const torch::Tensor& x) {
  auto half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor rope_one(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // x: [B, H, T, d]; cos/sin: [B, T, r] -> [B, 1, T, r]
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  auto rotary_dim = cos.size(-1);
  if (rotary_dim == x.size(-1)) return x * c + rotate_half(x) * s;
  auto rot = x.narrow(-1, 0, rotary_dim);
  auto pass = x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim);
  return torch::cat({rot * c + rotate_half(rot) * s, pass}, -1);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> apply_rope(const torch::Tensor& q, const torch::Tensor& k,
                                                   const torch::Tensor& cos, const torch::Tensor& sin,
                                                   bool fused) {
  return {rope_one(q, cos, sin), rope_one(k, cos, sin)};
}

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& allowed, double scale) {
  auto groups = q.size(1) / k.size(1);
  auto kk = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  auto vv = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  auto scores = torch::matmul(q.to(torch::kFloat32), kk.to(torch::kFloat32).transpose(-1, -2)) * scale;
  if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores, -1);
  // A row with nothing to attend to yields zeros, not NaN.
  probs = torch::nan_to_num(probs, 0.0);
  return torch::matmul(probs, vv.to(torch::kFloat32)).to(q.scalar_type());
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& allowed, double scale, bool fused) {
  if (!fused) return attention_reference(q, k, v, allowed, scale);
  c10::optional<torch::Tensor> mask;
  if (allowed.defined()) mask = allowed;
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/false, scale,
                                          /*enable_gqa=*/q.size(1) != k.size(1));
}

}  // namespace vlmzoo::nn
