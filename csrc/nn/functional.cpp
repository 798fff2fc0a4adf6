#include "nn/functional.h"

#include "ops/ops.h"
#include "ops/reference.h"

#include <limits>

namespace vlmzoo::nn {

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

namespace {
thread_local std::vector<torch::Tensor>* attention_capture = nullptr;

// attention_reference with its probabilities kept: [B, H, Tq, Tk].
torch::Tensor captured_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& allowed, double scale, std::vector<torch::Tensor>& into) {
  const int64_t groups = q.size(1) / k.size(1);
  auto kk = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  auto vv = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  auto scores = torch::matmul(q.to(torch::kFloat32), kk.to(torch::kFloat32).transpose(-1, -2)) * scale;
  if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  auto probs = torch::nan_to_num(torch::softmax(scores, -1), 0.0).to(q.scalar_type());  // no key: zeros
  into.push_back(probs);
  return torch::matmul(probs, vv.to(probs.scalar_type()));
}
}  // namespace

AttentionCapture::AttentionCapture(std::vector<torch::Tensor>* into) : previous_(attention_capture) {
  attention_capture = into;
}
AttentionCapture::~AttentionCapture() { attention_capture = previous_; }

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& allowed, double scale, bool fused) {
  if (attention_capture) return captured_attention(q, k, v, allowed, scale, *attention_capture);
  return fused ? ops::attention(q, k, v, optional(allowed), scale) : attention_reference(q, k, v, allowed, scale);
}

}  // namespace vlmzoo::nn
