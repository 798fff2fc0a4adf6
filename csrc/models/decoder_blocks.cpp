// The decoder assembly one block at a time: what the Python views (vlmzoo/models/blocks.py) call when a
// user calls `model.vision(pixel_values)`, `model.abstractor(features)` or `model.llm.layers[i](hidden)`,
// and what a hooked block's view runs inside the C++ forward. These never take the BlockOverrides path,
// so a view called from its own override does not recurse.
#include "models/decoder_vlm.h"
#include "nn/masks.h"

namespace vlmzoo::models {

torch::Tensor DecoderVlmImpl::run_vision(const torch::Tensor& pixel_values) {
  TORCH_CHECK_VALUE(vision, "vision: this model has no vision encoder (vision.kind \"none\")");
  TORCH_CHECK_VALUE(pixel_values.dim() == 4, "pixel_values: expected [images, channels, height, width], got ",
                    pixel_values.sizes());
  return vision->forward(pixel_values);
}

torch::Tensor DecoderVlmImpl::run_abstractor(const torch::Tensor& features, const AbstractorText& text) {
  TORCH_CHECK_VALUE(abstractor, "abstractor: this model has no abstractor (vision.kind \"none\")");
  TORCH_CHECK_VALUE(features.dim() == 3 && features.size(2) == vision->output_width(),
                    "features: expected [images, tokens, ", vision->output_width(), "] (the vision encoder's width), got ",
                    features.sizes());
  TORCH_CHECK_VALUE(!text.input_ids.defined() || abstractor->reads_text(), "qformer_input_ids: abstractor.kind \"",
                    config_.abstractor->kind, "\" reads no text");
  return abstractor->forward(features, text);
}

DecoderContext DecoderVlmImpl::layer_context(const torch::Tensor& hidden, const torch::Tensor& attention_mask,
                                             const torch::Tensor& position_ids) {
  TORCH_CHECK_VALUE(hidden.dim() == 3 && hidden.size(2) == llm->hidden_size(), "hidden_states: expected [batch, tokens, ",
                    llm->hidden_size(), "], got ", hidden.sizes());
  const auto batch = hidden.size(0), tokens = hidden.size(1);
  for (auto [name, t] : {std::pair<const char*, const torch::Tensor*>{"attention_mask", &attention_mask},
                         {"position_ids", &position_ids}}) {
    TORCH_CHECK_VALUE(!t->defined() || (t->dim() == 2 && t->size(0) == batch && t->size(1) == tokens), name,
                      ": expected [batch ", batch, ", tokens ", tokens, "], got ", t->sizes());
  }
  DecoderContext ctx;
  ctx.attention_mask = attention_mask;
  ctx.positions = position_ids.defined() ? position_ids
                                         : llm->default_positions(attention_mask, batch, tokens, hidden.device());
  ctx.allowed = nn::causal_mask(tokens, 0, attention_mask, hidden.device());
  // The LM's per-call tables (rotary cos/sin) land in ctx.lm_state; what begin adds to the embeddings
  // (OPT's learned positions) is not the layer's, so its output is dropped. Word embeddings, not `hidden`,
  // go in: OPT's begin projects from the word width.
  torch::NoGradGuard no_grad;
  llm->begin(llm->embed_tokens(torch::zeros({batch, tokens}, hidden.options().dtype(torch::kLong))), ctx);
  return ctx;
}

torch::Tensor DecoderVlmImpl::run_layer(int64_t index, const torch::Tensor& hidden, DecoderContext& ctx) {
  TORCH_CHECK_INDEX(index >= 0 && index < llm->num_layers(), "llm.layers: index ", index, " out of range for ",
                    llm->num_layers(), " layers");
  return llm->layer(index, hidden, ctx);
}

torch::Tensor DecoderVlmImpl::run_layer_attention(int64_t index, const torch::Tensor& hidden, DecoderContext& ctx) {
  TORCH_CHECK_INDEX(index >= 0 && index < llm->num_layers(), "llm.layers: index ", index, " out of range for ",
                    llm->num_layers(), " layers");
  return llm->layer_attention(index, hidden, ctx);
}

torch::Tensor DecoderVlmImpl::run_head(const torch::Tensor& hidden) {
  TORCH_CHECK_VALUE(hidden.dim() >= 2 && hidden.size(-1) == llm->hidden_size(), "hidden_states: expected [.., ",
                    llm->hidden_size(), "] (the LM's width), got ", hidden.sizes());
  return head->forward_own(hidden, *llm);
}

}  // namespace vlmzoo::models
