// llm kind "clip_text": CLIP's text encoder (transformers' CLIPTextModel): causal-masked pre-LN
// transformer, pooled at the end-of-text token. Radford et al. 2021, "Learning Transferable Visual
// Models From Natural Language Supervision".
//   input_ids [B, T] -> hidden [B, T, hidden] -> pooled [B, hidden] (the eos position's hidden state)
// Pooling as the reference: a config with the legacy eos_token_id 2 pools at argmax(input_ids) (the
// eos id was the largest id of CLIP's vocabulary); any other pools at the first eos_token_id.
#include "models/llm/text_tower.h"

namespace vlmzoo::models {
namespace {

using text_tower::TextTowerConfig;

struct ClipTextConfig : TextTowerConfig {};

const config::Schema<ClipTextConfig>& clip_text_schema() {
  static const auto schema = text_tower::schema_fields<ClipTextConfig>();
  return schema;
}

class ClipText : public text_tower::TextTower {
 public:
  ClipText(const ClipTextConfig& c, const BuildContext& b) : TextTower(c, MaskMode::kCausal, b) {}

  int64_t output_width() const override { return c_.hidden; }

  torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) override {
    auto hidden = last_hidden_state(input_ids, attention_mask);  // [B, T, D]
    auto ids = input_ids.to(torch::kLong);
    auto position = c_.eos_token_id == 2 ? ids.argmax(-1) : (ids == c_.eos_token_id).to(torch::kInt).argmax(-1);
    auto rows = torch::arange(hidden.size(0), position.options());
    return hidden.index({rows, position});  // [B, D]
  }
};

const bool clip_text_registered = register_kind<LanguageModel, ClipTextConfig>(
    "clip_text", clip_text_schema(),
    [](const ClipTextConfig& c, const BuildContext& b) { return std::make_shared<ClipText>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
