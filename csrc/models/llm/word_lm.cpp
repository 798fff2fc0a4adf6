#include "models/llm/word_lm.h"

namespace vlmzoo::models {

void WordEmbeddingLM::add_word_embeddings(int64_t vocab, int64_t width, const torch::TensorOptions& options) {
  vocab_ = vocab;
  embed = register_module("embed_tokens", nn::Embedding(vocab, width, options));
}

void WordEmbeddingLM::add_lm_head(int64_t width, bool tied, const torch::TensorOptions& options) {
  if (!tied) lm_head = register_module("lm_head", nn::Linear(width, vocab_, false, options));
}

torch::Tensor WordEmbeddingLM::embed_tokens(const torch::Tensor& input_ids) {
  check_token_range(input_ids, vocab_);
  return embed(input_ids);
}

torch::Tensor WordEmbeddingLM::logits(const torch::Tensor& hidden) {
  return lm_head ? lm_head(hidden) : torch::matmul(hidden, embed->weight.t());
}

void WordEmbeddingLM::set_vocab(const torch::Tensor& new_embed, const torch::Tensor& new_head) {
  replace_vocab_weights(embed, lm_head, new_embed, new_head);
  vocab_ = new_embed.size(0);
}

}  // namespace vlmzoo::models
