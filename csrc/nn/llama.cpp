#include "nn/llama.h"

#include "nn/masks.h"

namespace vlmzoo::nn {

LlamaLayerImpl::LlamaLayerImpl(const config::LlmConfig& c, KernelPolicyPtr policy) {
  attn_norm = register_module("attn_norm", RMSNorm(c.hidden, c.rms_eps, policy));
  attn = register_module(
      "attn", Attention(AttentionOptions{c.hidden, c.hidden, c.heads, c.kv_heads, c.head_dim, c.attention_bias}, policy));
  mlp_norm = register_module("mlp_norm", RMSNorm(c.hidden, c.rms_eps, policy));
  mlp = register_module("mlp", GatedMlp(c.hidden, c.mlp, c.act, c.mlp_bias, policy));
}

torch::Tensor LlamaLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& allowed,
                                      const std::pair<torch::Tensor, torch::Tensor>& rope, KVCache* cache) {
  auto attended = attn(attn_norm(x), allowed, rope, cache);
  auto [h, normed] = mlp_norm->forward_residual(attended, x);
  return h + mlp(normed);
}

LlamaModelImpl::LlamaModelImpl(const config::LlmConfig& c, KernelPolicyPtr policy)
    : config_(c), rope_(c.head_dim, c.rope_theta) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab, c.hidden));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.layers; ++i) layers->push_back(LlamaLayer(c, policy));
  norm = register_module("norm", RMSNorm(c.hidden, c.rms_eps, policy));
  if (!c.tie_embeddings) {
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden, c.vocab).bias(false)));
  }
}

torch::Tensor LlamaModelImpl::embed(const torch::Tensor& input_ids) {
  if (input_ids.numel() > 0) {
    auto [low, high] = torch::aminmax(input_ids);
    TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < config_.vocab,
                      "input_ids: token ids must lie in [0, llm.vocab ", config_.vocab, "), got [",
                      low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
  }
  return embed_tokens(input_ids);
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& embeds, const torch::Tensor& key_padding,
                                      const torch::Tensor& positions, std::vector<KVCache>* caches) {
  const int64_t past = caches && !caches->empty() ? (*caches)[0].length : 0;
  auto allowed = causal_mask(embeds.size(1), past, key_padding, embeds.device());
  auto rope = rope_.tables(positions, embeds.scalar_type());
  auto x = embeds;
  for (size_t i = 0; i < layers->size(); ++i) {
    x = layers->ptr<LlamaLayerImpl>(i)->forward(x, allowed, rope, caches ? &(*caches)[i] : nullptr);
  }
  return norm(x);
}

torch::Tensor LlamaModelImpl::logits(const torch::Tensor& hidden) {
  return lm_head ? lm_head(hidden) : torch::matmul(hidden, embed_tokens->weight.t());
}

}  // namespace vlmzoo::nn
