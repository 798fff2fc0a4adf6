#pragma once
// Multi-head attention: self or cross, MHA or GQA, with an optional KV cache for decoding.
#include "nn/functional.h"
#include "nn/linear.h"
#include "nn/overridable.h"

#include <optional>

namespace vlmzoo::nn {

// Keys and values of past tokens, preallocated so decoding writes in place.
struct KVCache {
  torch::Tensor k, v;  // [B, kv_heads, capacity, head_dim]
  int64_t length = 0;
  int64_t capacity = 0;  // wanted capacity; 0 = grow to fit

  // k_new, v_new: [B, kv_heads, T, head_dim]. Returns views of all cached keys and values.
  std::pair<torch::Tensor, torch::Tensor> append(const torch::Tensor& k_new, const torch::Tensor& v_new);
};

struct AttentionOptions {
  int64_t hidden;        // width of the queries' input and of the output
  int64_t context_dim;   // width of the keys' and values' input (hidden for self-attention)
  int64_t heads;
  int64_t kv_heads;
  int64_t head_dim;
  bool bias;
  double scale = 0;  // softmax scale; 0 = 1 / sqrt(head_dim)
};

class AttentionImpl : public torch::nn::Module, public Overridable {
 public:
  AttentionImpl(AttentionOptions options, KernelPolicyPtr policy, const torch::TensorOptions& tensor_options = {});

  // x: [B, T, hidden]; context: [B, S, context_dim] for cross-attention, undefined for self;
  // allowed: bool [B|1, 1, T, S_total] or undefined; rope: (cos, sin) [B, T, r] or none.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed,
                        const std::optional<std::pair<torch::Tensor, torch::Tensor>>& rope = std::nullopt,
                        KVCache* cache = nullptr, const torch::Tensor& context = {});
  // The same, never overridden (what a hooked block's Python view runs).
  torch::Tensor forward_own(const torch::Tensor& x, const torch::Tensor& allowed,
                            const std::optional<std::pair<torch::Tensor, torch::Tensor>>& rope = std::nullopt,
                            KVCache* cache = nullptr, const torch::Tensor& context = {});
  // Alone: unmasked self-attention without rotary positions (a vision tower's), x [B, T, hidden].
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0), {}); }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  AttentionOptions options_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(Attention);

}  // namespace vlmzoo::nn
