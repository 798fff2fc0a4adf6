#include "nn/rope.h"

namespace vlmzoo::nn {

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dim, double theta) : rotary_dim_(rotary_dim), theta_(theta) {
  // inv_freq as Hugging Face computes it: 1 / theta^(arange(0, r, 2) / r), in float32.
  auto exponents = torch::arange(0, rotary_dim_, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(rotary_dim_);
  inv_freq_ = 1.0 / torch::pow(theta_, exponents);
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::tables(const torch::Tensor& positions,
                                                                torch::ScalarType dtype) const {
  auto inv_freq = inv_freq_.to(positions.device());
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [B, T, r/2]
  auto angles = torch::cat({freqs, freqs}, -1);                                 // [B, T, r]
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

}  // namespace vlmzoo::nn
