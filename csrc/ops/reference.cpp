#include "ops/reference.h"

#include <cmath>
#include <limits>

#include "ops/autograd_util.h"

namespace vlmzoo::ops {

at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto x32 = x.to(compute_type(x));
  auto normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> reference_add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                          const at::Tensor& weight, double eps) {
  auto sum = x + residual;
  return {sum, reference_rms_norm(sum, weight, eps)};
}

at::Tensor reference_layer_norm(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, double eps) {
  return at::layer_norm_symint(x, {x.sym_size(-1)}, weight, bias, eps);
}

std::tuple<at::Tensor, at::Tensor> reference_add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                            const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias, double eps) {
  auto sum = x + residual;
  return {sum, reference_layer_norm(sum, weight, bias, eps)};
}

at::Tensor reference_activation(const at::Tensor& x, const std::string& act) {
  if (act == "gelu") return at::gelu(x);
  if (act == "gelu_tanh") return at::gelu(x, "tanh");
  if (act == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (act == "relu") return at::relu(x);
  if (act == "relu2") return at::relu(x).square();
  if (act == "silu") return at::silu(x);
  TORCH_CHECK_VALUE(false, "unknown activation \"", act,
                    "\" (expected gelu, gelu_tanh, quick_gelu, relu, relu2 or silu)");
}

at::Tensor reference_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, const std::string& act) {
  return reference_activation(bias.has_value() ? x + *bias : x, act);
}

at::Tensor reference_gated_act(const at::Tensor& gate, const at::Tensor& up, const std::string& act) {
  return reference_activation(gate, act) * up;
}

namespace {
// x: [B, H, T, d]; cos/sin: [B, T, r] -> [B, 1, T, r].
at::Tensor rope_one(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // cos/sin are cast to x's dtype first, as Hugging Face models do before applying them.
  auto c = cos.to(x.scalar_type()).unsqueeze(1), s = sin.to(x.scalar_type()).unsqueeze(1);
  auto rotary_dim = cos.sym_size(-1);
  auto head_dim = x.sym_size(-1);
  if (rotary_dim == head_dim) return x * c + rotate_half(x) * s;
  auto rot = x.narrow_symint(-1, 0, rotary_dim);
  auto pass = x.narrow_symint(-1, rotary_dim, head_dim - rotary_dim);
  return at::cat({rot * c + rotate_half(rot) * s, pass}, -1);
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> reference_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                  const at::Tensor& sin) {
  return {rope_one(q, cos, sin), rope_one(k, cos, sin)};
}

at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& allowed, std::optional<double> scale) {
  auto groups = q.sym_size(1) / k.sym_size(1);
  auto kk = groups > 1 ? k.repeat_interleave_symint(groups, 1) : k;
  auto vv = groups > 1 ? v.repeat_interleave_symint(groups, 1) : v;
  auto type = compute_type(q);
  double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.sym_size(-1).guard_int(__FILE__, __LINE__)));
  auto scores = at::matmul(q.to(type), kk.to(type).transpose(-1, -2)) * s;
  if (allowed.has_value())
    scores = scores.masked_fill(allowed->logical_not(), -std::numeric_limits<double>::infinity());
  // A row with nothing to attend to yields zeros, not NaN.
  auto probs = at::nan_to_num(at::softmax(scores, -1), 0.0);
  return at::matmul(probs, vv.to(type)).to(q.scalar_type());
}

namespace {
// [B, Hkv * G, ...] -> [B, Hkv, ...], summing each group of G query heads onto its kv head.
at::Tensor sum_groups(const at::Tensor& t, const c10::SymInt& kv_heads, const c10::SymInt& groups) {
  if (groups == 1) return t;
  return t.unflatten_symint(1, {kv_heads, groups}).sum(2);
}
}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> reference_attention_backward(const at::Tensor& grad,
                                                                            const at::Tensor& q_in,
                                                                            const at::Tensor& k_in,
                                                                            const at::Tensor& v_in, const at::Tensor&,
                                                                            const std::optional<at::Tensor>& allowed,
                                                                            double scale) {
  const auto type = compute_type(q_in);
  auto q = q_in.to(type), k = k_in.to(type), v = v_in.to(type);
  auto kv_heads = k.sym_size(1), groups = q.sym_size(1) / kv_heads;
  auto kk = groups == 1 ? k : k.repeat_interleave_symint(groups, 1);
  auto vv = groups == 1 ? v : v.repeat_interleave_symint(groups, 1);
  auto scores = at::matmul(q, kk.transpose(-1, -2)) * scale;
  if (allowed.has_value())
    scores = scores.masked_fill(allowed->logical_not(), -std::numeric_limits<double>::infinity());
  auto probs = at::nan_to_num(at::softmax(scores, -1), 0.0);  // rows with nothing to attend to: zeros
  auto g = grad.to(type);
  auto dv = sum_groups(at::matmul(probs.transpose(-1, -2), g), kv_heads, groups);
  auto dprobs = at::matmul(g, vv.transpose(-1, -2));
  auto dscores = probs * (dprobs - (dprobs * probs).sum(-1, true));
  auto dq = at::matmul(dscores, kk) * scale;
  auto dk = sum_groups(at::matmul(dscores.transpose(-1, -2), q), kv_heads, groups) * scale;
  return {dq.to(q_in.scalar_type()), dk.to(k_in.scalar_type()), dv.to(v_in.scalar_type())};
}

at::Tensor reference_multiway_linear(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                     const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                     const std::optional<at::Tensor>& bias_b) {
  auto tokens = x.size(1);
  return at::cat({at::linear(x.narrow(1, 0, split), weight_a, bias_a),
                  at::linear(x.narrow(1, split, tokens - split), weight_b, bias_b)},
                 1);
}

at::Tensor reference_multiway_layer_norm(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                         const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                         const std::optional<at::Tensor>& bias_b, double eps) {
  auto tokens = x.size(1);
  return at::cat({reference_layer_norm(x.narrow(1, 0, split), weight_a, bias_a, eps),
                  reference_layer_norm(x.narrow(1, split, tokens - split), weight_b, bias_b, eps)},
                 1);
}

}  // namespace vlmzoo::ops
