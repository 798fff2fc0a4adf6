#include "models/slots.h"

namespace vlmzoo::models {

void check_token_range(const torch::Tensor& input_ids, int64_t vocab) {
  if (input_ids.numel() == 0 || input_ids.device().type() == torch::kMeta) return;
  auto [low, high] = torch::aminmax(input_ids);
  TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < vocab, "input_ids: token ids must lie in [0, llm.vocab ",
                    vocab, "), got [", low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
}

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
