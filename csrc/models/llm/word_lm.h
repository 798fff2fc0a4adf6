#pragma once
// What the causal LM kinds (llama, opt, persimmon) share: word embeddings "embed_tokens" [vocab, width]
// and an LM head "lm_head" [vocab, width] (null when tied to the embeddings), with the LanguageModel
// methods that only read those two: vocab_size, embed_tokens, logits, input_embeddings, tied_embeddings,
// set_vocab. A kind registers its own modules in between, so the parameter order stays embed, ..., head.
#include "models/slots.h"
#include "nn/linear.h"

namespace vlmzoo::models {

class WordEmbeddingLM : public LanguageModel {
 public:
  int64_t vocab_size() const override { return vocab_; }
  // input_ids [B, T] -> [B, T, width]; ids outside [0, vocab) are a ValueError.
  torch::Tensor embed_tokens(const torch::Tensor& input_ids) override;
  // hidden [.., width] -> [.., vocab]: the LM head, or the word embeddings transposed when tied.
  torch::Tensor logits(const torch::Tensor& hidden) override;
  torch::Tensor input_embeddings() const override { return embed->weight; }
  bool tied_embeddings() const override { return lm_head.is_empty(); }
  void set_vocab(const torch::Tensor& new_embed, const torch::Tensor& new_head) override;

  nn::Embedding embed{nullptr};
  nn::Linear lm_head{nullptr};  // null when tied to embed_tokens

 protected:
  // Registers "embed_tokens" [vocab, width]; call it first in the kind's constructor.
  void add_word_embeddings(int64_t vocab, int64_t width, const torch::TensorOptions& options);
  // Registers "lm_head" [vocab, width] without bias unless tied; call it last.
  void add_lm_head(int64_t width, bool tied, const torch::TensorOptions& options);

  int64_t vocab_ = 0;  // the current vocabulary (set_vocab changes it)
};

}  // namespace vlmzoo::models
