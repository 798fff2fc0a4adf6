#include "nn/attention_pool.h"

namespace vlmzoo::nn {

AttentionPoolImpl::AttentionPoolImpl(int64_t hidden, int64_t heads, int64_t mlp_width, const std::string& act,
                                     double eps, KernelPolicyPtr policy, const torch::TensorOptions& options) {
  probe = register_parameter("probe", torch::empty({1, 1, hidden}, options));
  attn = register_module(
      "attn", Attention(AttentionOptions{hidden, hidden, heads, heads, hidden / heads, true}, policy, options));
  norm = register_module("norm", LayerNorm(hidden, eps, policy, options));
  mlp = register_module("mlp", Mlp(hidden, mlp_width, hidden, act, true, policy, options));
}

torch::Tensor AttentionPoolImpl::forward(const torch::Tensor& tokens) {
  auto query = probe.expand({tokens.size(0), 1, probe.size(2)});
  auto h = attn(query, torch::Tensor(), std::nullopt, nullptr, tokens);  // [N, 1, hidden]
  h = h + mlp(norm(h));
  return h.select(1, 0);
}

}  // namespace vlmzoo::nn
