#include "nn/llama.h"

namespace vlmzoo::nn {

LlamaLayerImpl::LlamaLayerImpl(const LlamaLayerOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options) {
  attn_norm = register_module("attn_norm", RMSNorm(o.hidden, o.rms_eps, policy, options));
  attn = register_module(
      "attn", Attention(AttentionOptions{o.hidden, o.hidden, o.heads, o.kv_heads, o.head_dim, o.attention_bias}, policy,
                        options));
  mlp_norm = register_module("mlp_norm", RMSNorm(o.hidden, o.rms_eps, policy, options));
  mlp = register_module("mlp", GatedMlp(o.hidden, o.mlp, o.act, o.mlp_bias, policy, options));
}

torch::Tensor LlamaLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& allowed,
                                      const std::pair<torch::Tensor, torch::Tensor>& rope, KVCache* cache) {
  auto attended = attn(attn_norm(x), allowed, rope, cache);
  auto [h, normed] = mlp_norm->forward_residual(attended, x);
  return h + mlp(normed);
}

}  // namespace vlmzoo::nn
