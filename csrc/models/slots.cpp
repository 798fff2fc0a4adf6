#include "models/slots.h"

namespace vlmzoo::models {

torch::Tensor LanguageModel::default_positions(const torch::Tensor& attention_mask, int64_t batch, int64_t tokens,
                                               const torch::Device& device) const {
  // transformers' Llama forward: 0..T-1 whatever the padding.
  return torch::arange(tokens, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(0).expand({batch, tokens});
}

torch::Tensor LanguageModel::prompt_positions(const torch::Tensor& attention_mask) const {
  // Positions count real tokens only, so left padding does not shift them (transformers' generate).
  return (attention_mask.to(torch::kLong).cumsum(-1) - 1).clamp_min(0);
}

}  // namespace vlmzoo::models
