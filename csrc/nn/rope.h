#pragma once
// Rotary position embedding tables (rotate_half convention, as Hugging Face checkpoints expect).
#include <torch/torch.h>

namespace vlmzoo::nn {

class RotaryEmbedding {
 public:
  // rotary_dim: channels rotated per head (head_dim for Llama, a fraction of it for Persimmon).
  RotaryEmbedding(int64_t rotary_dim, double theta);
  // positions: [B, T] long -> (cos, sin), each [B, T, rotary_dim] in `dtype`.
  std::pair<torch::Tensor, torch::Tensor> tables(const torch::Tensor& positions, torch::ScalarType dtype) const;
  int64_t rotary_dim() const { return rotary_dim_; }

 private:
  int64_t rotary_dim_;
  double theta_;
  torch::Tensor inv_freq_;  // [rotary_dim / 2] float32 on the CPU, computed once
};

}  // namespace vlmzoo::nn
