#pragma once
// One LLaMA decoder layer: pre-RMSNorm, rotary GQA self-attention with a KV cache, SwiGLU MLP.
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

struct LlamaLayerOptions {
  int64_t hidden, heads, kv_heads, head_dim, mlp;
  double rms_eps;
  bool attention_bias, mlp_bias;
  std::string act;
};

class LlamaLayerImpl : public torch::nn::Module {
 public:
  LlamaLayerImpl(const LlamaLayerOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);
  // x: [B, T, hidden]; allowed: bool [B|1, 1, T, S]; rope: (cos, sin) [B, T, head_dim].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed,
                        const std::pair<torch::Tensor, torch::Tensor>& rope, KVCache* cache);

  RMSNorm attn_norm{nullptr}, mlp_norm{nullptr};
  Attention attn{nullptr};
  GatedMlp mlp{nullptr};
};
TORCH_MODULE(LlamaLayer);

}  // namespace vlmzoo::nn
