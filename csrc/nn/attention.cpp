#include "nn/attention.h"

#include <cmath>

namespace vlmzoo::nn {

std::pair<torch::Tensor, torch::Tensor> KVCache::append(const torch::Tensor& k_new, const torch::Tensor& v_new) {
  int64_t needed = length + k_new.size(2);
  if (!k.defined() || needed > k.size(2)) {
    int64_t new_capacity = std::max({needed, capacity, k.defined() ? 2 * k.size(2) : int64_t{0}});
    auto shape = k_new.sizes().vec();
    shape[2] = new_capacity;
    auto grown_k = torch::empty(shape, k_new.options());
    auto grown_v = torch::empty(shape, v_new.options());
    if (length > 0) {
      grown_k.narrow(2, 0, length).copy_(k.narrow(2, 0, length));
      grown_v.narrow(2, 0, length).copy_(v.narrow(2, 0, length));
    }
    k = grown_k;
    v = grown_v;
  }
  k.narrow(2, length, k_new.size(2)).copy_(k_new);
  v.narrow(2, length, v_new.size(2)).copy_(v_new);
  length = needed;
  return {k.narrow(2, 0, length), v.narrow(2, 0, length)};
}

AttentionImpl::AttentionImpl(AttentionOptions options, KernelPolicyPtr policy, const torch::TensorOptions& tensor_options)
    : options_(options), policy_(std::move(policy)) {
  auto linear = [&](int64_t in, int64_t out, bool bias) { return Linear(in, out, bias, tensor_options); };
  const auto& o = options_;
  q_proj = register_module("q_proj", linear(o.hidden, o.heads * o.head_dim, o.bias));
  k_proj = register_module("k_proj", linear(o.context_dim, o.kv_heads * o.head_dim, o.bias));
  v_proj = register_module("v_proj", linear(o.context_dim, o.kv_heads * o.head_dim, o.bias));
  o_proj = register_module("o_proj", linear(o.heads * o.head_dim, o.hidden, o.bias));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& allowed,
                                     const std::optional<std::pair<torch::Tensor, torch::Tensor>>& rope,
                                     KVCache* cache, const torch::Tensor& context) {
  if (overridden()) {
    return call_override({x}, [&](const auto& in) { return forward_own(in.at(0), allowed, rope, cache, context); });
  }
  return forward_own(x, allowed, rope, cache, context);
}

torch::Tensor AttentionImpl::forward_own(const torch::Tensor& x, const torch::Tensor& allowed,
                                         const std::optional<std::pair<torch::Tensor, torch::Tensor>>& rope,
                                         KVCache* cache, const torch::Tensor& context) {
  const auto& o = options_;
  const auto batch = x.size(0), tokens = x.size(1);
  const auto& source = context.defined() ? context : x;
  // [B, T, H*d] -> [B, H, T, d]
  auto q = q_proj(x).view({batch, tokens, o.heads, o.head_dim}).transpose(1, 2);
  auto k = k_proj(source).view({batch, source.size(1), o.kv_heads, o.head_dim}).transpose(1, 2);
  auto v = v_proj(source).view({batch, source.size(1), o.kv_heads, o.head_dim}).transpose(1, 2);
  if (rope) std::tie(q, k) = apply_rope(q, k, rope->first, rope->second, policy_->fused);
  if (cache) std::tie(k, v) = cache->append(k, v);
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(o.head_dim));
  auto out = attention(q, k, v, allowed, scale, policy_->fused);
  return o_proj(out.transpose(1, 2).reshape({batch, tokens, o.heads * o.head_dim}));
}

}  // namespace vlmzoo::nn
