#pragma once
// LLaMA-style decoder: RMSNorm, RoPE, SwiGLU, GQA, KV cache.
#include "config/model_config.h"
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"
#include "nn/rope.h"

namespace vlmzoo::nn {

class LlamaLayerImpl : public torch::nn::Module {
 public:
  LlamaLayerImpl(const config::LlmConfig& c, KernelPolicyPtr policy);
  // x: [B, T, hidden]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed,
                        const std::pair<torch::Tensor, torch::Tensor>& rope, KVCache* cache);

  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  Attention attn{nullptr};
  GatedMlp mlp{nullptr};
};
TORCH_MODULE(LlamaLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const config::LlmConfig& c, KernelPolicyPtr policy);

  torch::Tensor embed(const torch::Tensor& input_ids);  // [B, T] -> [B, T, hidden]
  // embeds: [B, T, hidden]; key_padding: [B, past + T] or undefined; positions: [B, T];
  // caches: one per layer, or null. Returns the final normed hidden states [B, T, hidden].
  torch::Tensor forward(const torch::Tensor& embeds, const torch::Tensor& key_padding,
                        const torch::Tensor& positions, std::vector<KVCache>* caches = nullptr);
  torch::Tensor logits(const torch::Tensor& hidden);  // [B, T, hidden] -> [B, T, vocab]

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tied to embed_tokens

 private:
  config::LlmConfig config_;
  RotaryEmbedding rope_;
};
TORCH_MODULE(LlamaModel);

}  // namespace vlmzoo::nn
