// Field groups several kinds describe alike, written once: a transformer stack's shape (the EVA ViT, the
// Q-Former, the decoder LMs) and a decoder LM's special token ids. Each kind's schema stays one chain:
//   transformer_shape(Schema<C>().integer("vocab", ...)).integer("mlp", ...)...
#pragma once

#include "config/schema.h"

namespace vlmzoo::models {

// hidden, layers, heads: the widths every transformer stack has (its "mlp" width the caller adds where its
// order in the JSON wants it).
template <class C>
config::Schema<C>& transformer_shape(config::Schema<C>& schema) {
  return schema.integer("hidden", &C::hidden, config::kWidth)
      .integer("layers", &C::layers, config::kCount)
      .integer("heads", &C::heads, config::kCount);
}

template <class C>
config::Schema<C>& transformer_shape(config::Schema<C>&& schema) {
  return transformer_shape(schema);
}

// A decoder LM's bos/eos/pad ids must name rows of its vocabulary.
template <class C>
void require_special_ids_in_vocab(JsonReader& r, const C& c) {
  config::require_token_ids_in_vocab(r, c.vocab, {{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                                                   {"pad_token_id", c.pad_token_id}});
}

}  // namespace vlmzoo::models
