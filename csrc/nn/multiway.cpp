#include "nn/multiway.h"

#include "ops/ops.h"
#include "ops/reference.h"

#include <cmath>

namespace vlmzoo::nn {

MultiwayLinearImpl::MultiwayLinearImpl(int64_t in, int64_t out, bool bias, KernelPolicyPtr policy,
                                       const torch::TensorOptions& options)
    : policy_(std::move(policy)) {
  A = register_module("A", Linear(in, out, bias, options));
  B = register_module("B", Linear(in, out, bias, options));
}

torch::Tensor MultiwayLinearImpl::forward(const torch::Tensor& x, int64_t split) {
  const int64_t tokens = x.size(1);
  if (split == tokens) return A(x);  // one modality: one dense linear over the whole sequence
  if (split == 0) return B(x);
  if (A->weight_format() != WeightFormat::kFloat) {  // packed weights: per-range linears (inference only)
    return torch::cat({A(x.narrow(1, 0, split)), B(x.narrow(1, split, tokens - split))}, 1);
  }
  return policy_->fused
             ? ops::multiway_linear(x, split, A->weight, optional(A->bias), B->weight, optional(B->bias))
             : ops::reference_multiway_linear(x, split, A->weight, optional(A->bias), B->weight, optional(B->bias));
}

MultiwayLayerNormImpl::MultiwayLayerNormImpl(int64_t dim, double eps, KernelPolicyPtr policy,
                                             const torch::TensorOptions& options)
    : eps_(eps), policy_(policy) {
  A = register_module("A", LayerNorm(dim, eps, policy, options));
  B = register_module("B", LayerNorm(dim, eps, policy, options));
}

torch::Tensor MultiwayLayerNormImpl::forward(const torch::Tensor& x, int64_t split) {
  const int64_t tokens = x.size(1);
  if (split == tokens) return A(x);
  if (split == 0) return B(x);
  return policy_->fused
             ? ops::multiway_layer_norm(x, split, A->weight, A->bias, B->weight, B->bias, eps_)
             : ops::reference_multiway_layer_norm(x, split, A->weight, A->bias, B->weight, B->bias, eps_);
}

FfnExpertImpl::FfnExpertImpl(int64_t hidden, int64_t mlp, double eps, KernelPolicyPtr policy,
                             const torch::TensorOptions& options) {
  fc1 = register_module("fc1", Linear(hidden, mlp, true, options));
  fc2 = register_module("fc2", Linear(mlp, hidden, true, options));
  ffn_layernorm = register_module("ffn_layernorm", LayerNorm(mlp, eps, std::move(policy), options));
}

MultiwayFfnImpl::MultiwayFfnImpl(const MultiwayOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options)
    : o_(o), policy_(policy) {
  A = register_module("A", FfnExpert(o.hidden, o.mlp, o.eps, policy, options));
  B = register_module("B", FfnExpert(o.hidden, o.mlp, o.eps, policy, options));
  if (o.vl_expert) C = register_module("C", FfnExpert(o.hidden, o.mlp, o.eps, policy, options));
}

torch::Tensor MultiwayFfnImpl::forward(const torch::Tensor& x, int64_t split, bool joint) {
  const bool fused = policy_->fused;
  if (C && joint) {  // VLMo: a vision-language pass goes through the third expert alone
    auto h = layer_norm(activation(C->fc1(x), o_.act, fused), C->ffn_layernorm->weight, C->ffn_layernorm->bias,
                        o_.eps, fused);
    return C->fc2(h);
  }
  const int64_t tokens = x.size(1);
  auto route = [&](Linear a, Linear b, const torch::Tensor& in) {
    if (split == tokens) return a(in);
    if (split == 0) return b(in);
    if (a->weight_format() != WeightFormat::kFloat) {
      return torch::cat({a(in.narrow(1, 0, split)), b(in.narrow(1, split, tokens - split))}, 1);
    }
    return fused ? ops::multiway_linear(in, split, a->weight, optional(a->bias), b->weight, optional(b->bias))
                 : ops::reference_multiway_linear(in, split, a->weight, optional(a->bias), b->weight,
                                                  optional(b->bias));
  };
  auto h = activation(route(A->fc1, B->fc1, x), o_.act, fused);  // gelu is per element: one pass over both
  auto na = A->ffn_layernorm, nb = B->ffn_layernorm;
  if (split == tokens) h = na(h);
  else if (split == 0) h = nb(h);
  else h = fused ? ops::multiway_layer_norm(h, split, na->weight, na->bias, nb->weight, nb->bias, o_.eps)
                 : ops::reference_multiway_layer_norm(h, split, na->weight, na->bias, nb->weight, nb->bias, o_.eps);
  return route(A->fc2, B->fc2, h);
}

torch::Tensor MultiwayFfnImpl::forward_by_modality(const torch::Tensor& residual, int64_t split,
                                                   MultiwayLayerNormImpl& norm) {
  // residual: [B, T, hidden] with 0 < split < T -> [B, T, hidden]
  const int64_t tokens = residual.size(1);
  const bool fused = policy_->fused;
  auto block = [&](FfnExpert expert, LayerNorm first_norm, int64_t start, int64_t length) {
    auto range = residual.narrow(1, start, length);  // [B, length, hidden], read in place
    auto x = layer_norm(range, first_norm->weight, first_norm->bias, o_.eps, fused);  // contiguous rows
    auto h = activation(expert->fc1(x), o_.act, fused);
    auto n = expert->ffn_layernorm;
    return std::make_pair(range, expert->fc2(layer_norm(h, n->weight, n->bias, o_.eps, fused)));
  };
  auto [vision, vision_out] = block(A, norm.A, 0, split);
  auto [text, text_out] = block(B, norm.B, split, tokens - split);
  if (torch::GradMode::is_enabled()) return torch::cat({vision + vision_out, text + text_out}, 1);
  auto out = torch::empty_like(residual, residual.options().memory_format(at::MemoryFormat::Contiguous));
  auto vision_part = out.narrow(1, 0, split), text_part = out.narrow(1, split, tokens - split);
  torch::add_out(vision_part, vision, vision_out);  // written in place: no concatenation
  torch::add_out(text_part, text, text_out);
  return out;
}

MultiwayAttentionImpl::MultiwayAttentionImpl(const MultiwayOptions& o, KernelPolicyPtr policy,
                                             const torch::TensorOptions& options)
    : o_(o), policy_(policy) {
  auto linear = [&] { return MultiwayLinear(o.hidden, o.hidden, true, policy, options); };
  k_proj = register_module("k_proj", linear());
  v_proj = register_module("v_proj", linear());
  q_proj = register_module("q_proj", linear());
  out_proj = register_module("out_proj", linear());
  inner_attn_ln = register_module("inner_attn_ln", MultiwayLayerNorm(o.hidden, o.eps, policy, options));
}

torch::Tensor MultiwayAttentionImpl::forward(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed) {
  const int64_t batch = x.size(0), tokens = x.size(1), head_dim = o_.hidden / o_.heads;
  // [B, T, hidden] -> [B, heads, T, head_dim]
  auto heads = [&](const torch::Tensor& t) { return t.view({batch, tokens, o_.heads, head_dim}).transpose(1, 2); };
  auto q = heads(q_proj(x, split)), k = heads(k_proj(x, split)), v = heads(v_proj(x, split));
  auto out = attention(q, k, v, allowed, 1.0 / std::sqrt(static_cast<double>(head_dim)), policy_->fused);
  out = out.transpose(1, 2).reshape({batch, tokens, o_.hidden});
  return out_proj(inner_attn_ln(out, split), split);
}

MultiwayLayerImpl::MultiwayLayerImpl(const MultiwayOptions& o, KernelPolicyPtr policy,
                                     const torch::TensorOptions& options) {
  self_attn = register_module("self_attn", MultiwayAttention(o, policy, options));
  self_attn_layer_norm = register_module("self_attn_layer_norm", MultiwayLayerNorm(o.hidden, o.eps, policy, options));
  ffn = register_module("ffn", MultiwayFfn(o, policy, options));
  final_layer_norm = register_module("final_layer_norm", MultiwayLayerNorm(o.hidden, o.eps, policy, options));
}

torch::Tensor MultiwayLayerImpl::forward(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed,
                                         bool joint) {
  auto h = x + self_attn(self_attn_layer_norm(x, split), split, allowed);
  const bool both = split > 0 && split < h.size(1);
  if (both && ffn->fused() && !(ffn->C && joint)) return ffn->forward_by_modality(h, split, *final_layer_norm);
  return h + ffn(final_layer_norm(h, split), split, joint);
}

double MultiwayLayerImpl::flops(const MultiwayOptions& o, int64_t tokens) {
  const double t = static_cast<double>(tokens), d = static_cast<double>(o.hidden);
  // q, k, v, out projections; scores and weighted values; fc1 and fc2 (one expert per token).
  return 2.0 * t * (4.0 * d * d + 2.0 * t * d + 2.0 * d * o.mlp);
}

}  // namespace vlmzoo::nn
