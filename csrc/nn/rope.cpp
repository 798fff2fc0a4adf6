#include "nn/rope.h"

namespace vlmzoo::nn {

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dim, double theta) : rotary_dim_(rotary_dim), theta_(theta) {}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbedding::tables(const torch::Tensor& positions,
                                                                torch::ScalarType dtype) const {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(positions.device());
  // inv_freq as Hugging Face computes it: 1 / theta^(arange(0, r, 2) / r), in float32.
  auto exponents = torch::arange(0, rotary_dim_, 2, torch::TensorOptions().dtype(torch::kInt64).device(positions.device()))
                       .to(torch::kFloat32) / static_cast<double>(rotary_dim_);
  auto inv_freq = 1.0 / torch::pow(theta_, exponents);
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq.to(opts);  // [B, T, r/2]
  auto angles = torch::cat({freqs, freqs}, -1);                                 // [B, T, r]
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

}  // namespace vlmzoo::nn
