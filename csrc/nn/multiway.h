#pragma once
// The multiway transformer block (BEiT-3, VLMo): one bidirectional layer over [vision; text] whose
// per-token modules come in two copies, A for the vision tokens [0, split) and B for the text tokens
// [split, T), with attention joint over all tokens. Matches torchscale 0.3.0's EncoderLayer with
// multiway=True, subln=True (torchscale/architecture/encoder.py, component/multiway_network.py):
//   x += out_proj(inner_attn_ln(attention(q_proj, k_proj, v_proj of self_attn_layer_norm(x))))
//   x += fc2(ffn_layernorm(gelu(fc1(final_layer_norm(x)))))
// Routing never gathers or copies the sequence: each expert reads and writes its token range in place
// (vlmzoo::multiway_linear / multiway_layer_norm). split = T is vision only, 0 text only.
//   x: [B, T, hidden] -> [B, T, hidden]
#include "nn/functional.h"
#include "nn/linear.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

// y[:, :split] = A(x[:, :split]); y[:, split:] = B(x[:, split:]). Parameters A.*, B.* (torchscale's names).
class MultiwayLinearImpl : public torch::nn::Module {
 public:
  MultiwayLinearImpl(int64_t in, int64_t out, bool bias, KernelPolicyPtr policy, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, int64_t split);  // [B, T, in] -> [B, T, out]
  Linear A{nullptr}, B{nullptr};

 private:
  KernelPolicyPtr policy_;
};
TORCH_MODULE(MultiwayLinear);

class MultiwayLayerNormImpl : public torch::nn::Module {
 public:
  MultiwayLayerNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, int64_t split);  // [B, T, dim] -> [B, T, dim]
  LayerNorm A{nullptr}, B{nullptr};

 private:
  double eps_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(MultiwayLayerNorm);

// One modality's feed-forward network (torchscale's FeedForwardNetwork with subln): fc1, ffn_layernorm, fc2.
class FfnExpertImpl : public torch::nn::Module {
 public:
  FfnExpertImpl(int64_t hidden, int64_t mlp, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options);
  Linear fc1{nullptr}, fc2{nullptr};
  LayerNorm ffn_layernorm{nullptr};
};
TORCH_MODULE(FfnExpert);

struct MultiwayOptions {
  int64_t hidden, heads, mlp;
  double eps = 1e-5;
  std::string act = "gelu";
  // VLMo's third expert: a vision-language FFN (`ffn.C`) that the tokens of a vision-language pass
  // use instead of A and B. Off in BEiT-3 (its released checkpoints have two experts).
  bool vl_expert = false;
};

// The routed FFN: fc1 / gelu / ffn_layernorm / fc2 of expert A on [0, split), B on [split, T); with
// the third expert and `joint` (a vision-language pass), C on every token.
class MultiwayFfnImpl : public torch::nn::Module {
 public:
  MultiwayFfnImpl(const MultiwayOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, int64_t split, bool joint);
  // residual + forward(norm(residual)) for a pass with both modalities, run per modality block: each expert's
  // norm reads its token range of `residual` in place and writes the range's rows of every batch element
  // contiguously, so fc1 and fc2 are one dense GEMM per expert over the batch (not one per batch element,
  // whose 32-row text GEMMs ran at ~70% of the dense speed); the residual adds write both ranges into one
  // output. The same arithmetic as forward, in another order of rows.
  torch::Tensor forward_by_modality(const torch::Tensor& residual, int64_t split, MultiwayLayerNormImpl& norm);
  bool fused() const { return policy_->fused; }
  FfnExpert A{nullptr}, B{nullptr}, C{nullptr};

 private:
  MultiwayOptions o_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(MultiwayFfn);

// Joint self-attention with per-modality projections and sub-LN (torchscale's MultiheadAttention).
class MultiwayAttentionImpl : public torch::nn::Module {
 public:
  MultiwayAttentionImpl(const MultiwayOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);
  // allowed: bool [B|1, 1, 1|T, T] (true = may attend) or undefined.
  torch::Tensor forward(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed);
  MultiwayLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  MultiwayLayerNorm inner_attn_ln{nullptr};

 private:
  MultiwayOptions o_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(MultiwayAttention);

class MultiwayLayerImpl : public torch::nn::Module {
 public:
  MultiwayLayerImpl(const MultiwayOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);
  // joint: the pass holds both modalities (routes to the third expert when there is one).
  torch::Tensor forward(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed, bool joint);
  // Multiply-adds x 2 of one forward over `tokens` tokens.
  static double flops(const MultiwayOptions& o, int64_t tokens);

  MultiwayAttention self_attn{nullptr};
  MultiwayLayerNorm self_attn_layer_norm{nullptr}, final_layer_norm{nullptr};
  MultiwayFfn ffn{nullptr};
};
TORCH_MODULE(MultiwayLayer);

}  // namespace vlmzoo::nn
