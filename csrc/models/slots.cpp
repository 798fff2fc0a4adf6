#include "models/slots.h"

namespace vlmzoo::models {

void check_token_range(const torch::Tensor& input_ids, int64_t vocab) {
  if (input_ids.numel() == 0 || input_ids.device().type() == torch::kMeta) return;
  auto [low, high] = torch::aminmax(input_ids);
  TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < vocab, "input_ids: token ids must lie in [0, llm.vocab ",
                    vocab, "), got [", low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
}

void replace_vocab_weights(nn::Embedding& embed, nn::Linear& head, const torch::Tensor& new_embed,
                           const torch::Tensor& new_head) {
  TORCH_CHECK_VALUE(new_embed.dim() == 2 && new_embed.size(1) == embed->weight.size(1),
                    "input embeddings: expected [vocab, ", embed->weight.size(1), "], got ", new_embed.sizes());
  TORCH_CHECK_VALUE(head.is_empty() != new_head.defined(), "lm_head: the head is ", head.is_empty() ? "tied" : "untied",
                    head.is_empty() ? ", so no head weight is taken" : ", so it needs its weight");
  if (new_head.defined()) {
    TORCH_CHECK_VALUE(new_head.size(0) == new_embed.size(0), "lm_head: ", new_head.size(0), " rows for ",
                      new_embed.size(0), " input embeddings");
    head->set_weight(new_head);
  }
  embed->set_weight(new_embed);
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
