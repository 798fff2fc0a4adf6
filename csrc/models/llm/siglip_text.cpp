// llm kind "siglip_text": SigLIP's text encoder (transformers' SiglipTextModel): bidirectional pre-LN
// transformer (padding masked when an attention_mask is given), pooled at the last position, then a
// linear head. Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training".
//   input_ids [B, T] -> hidden [B, T, hidden] -> head(hidden[:, -1]) [B, projection]
#include "models/llm/text_tower.h"

namespace vlmzoo::models {
namespace {

struct SiglipTextConfig : text_tower::TextTowerConfig {
  int projection = 0;  // width of the head; 0 = hidden (the reference's projection_size None)
  SiglipTextConfig() {
    vocab = 32000, hidden = 768, layers = 12, heads = 12, mlp = 3072, max_positions = 64;
    act = "gelu_tanh", eps = 1e-6;
  }
};

const config::Schema<SiglipTextConfig>& siglip_text_schema() {
  static const auto schema = text_tower::schema_fields<SiglipTextConfig>()
                                 .integer("projection", &SiglipTextConfig::projection, {0, 1 << 20})
                                 .after([](JsonReader&, SiglipTextConfig& c) {
                                   if (c.projection == 0) c.projection = c.hidden;
                                 });
  return schema;
}

class SiglipText : public text_tower::TextTower {
 public:
  SiglipText(const SiglipTextConfig& c, const BuildContext& b)
      : TextTower(c, MaskMode::kBidirectional, b), projection_(c.projection) {
    head = register_module("head", nn::Linear(c.hidden, c.projection, true, b.options));
  }

  int64_t output_width() const override { return projection_; }

  torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) override {
    auto hidden = last_hidden_state(input_ids, attention_mask);  // [B, T, D]
    return head(hidden.select(1, hidden.size(1) - 1));             // [B, projection]
  }

  double flops(int64_t tokens) const override {
    return TextTower::flops(tokens) + 2.0 * c_.hidden * projection_;  // per text: one head on one position
  }

  nn::Linear head{nullptr};

 private:
  int64_t projection_;
};

const bool siglip_text_registered = register_kind<LanguageModel, SiglipTextConfig>(
    "siglip_text", siglip_text_schema(),
    [](const SiglipTextConfig& c, const BuildContext& b) { return std::make_shared<SiglipText>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
