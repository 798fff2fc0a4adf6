// fusion kind "splice": visual tokens replace the image placeholder tokens of the text, in order
// (LLaVA's and BLIP-2's masked_scatter, transformers' get_placeholder_mask). With image_token_id
// -1 they are prepended to the text instead, one image per row, and the attention mask is extended
// (the older BLIP-2 layout); logits then start after them.
//   input_ids [B, T] + visual [N, V, D] -> embeds [B, T, D] (or [B, V + T, D] when prepended)
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct SpliceConfig : SlotConfig {
  int image_token_id = 32000;  // -1: no placeholders, the visual tokens go first
};

const config::Schema<SpliceConfig>& splice_schema() {
  static const auto schema =
      config::Schema<SpliceConfig>().integer("image_token_id", &SpliceConfig::image_token_id, {-1, config::kTokenId.max});
  return schema;
}

class SpliceFusion : public Fusion {
 public:
  explicit SpliceFusion(int64_t image_token_id) : image_token_id_(image_token_id) {}

  int64_t image_token_id() const override { return image_token_id_; }

  FusedInputs fuse(const torch::Tensor& input_ids, const torch::Tensor& text_embeds,
                   const torch::Tensor& attention_mask, const torch::Tensor& position_ids, const torch::Tensor& visual,
                   LanguageModel&) override {
    const auto& embeds = text_embeds;
    if (image_token_id_ < 0) return prepend(embeds, attention_mask, position_ids, visual);
    auto image_positions = input_ids == image_token_id_;  // [B, T]
    const int64_t placeholders = image_positions.sum().item<int64_t>();
    if (!visual.defined()) {
      TORCH_CHECK_VALUE(placeholders == 0, "input_ids hold ", placeholders, " image tokens (fusion.image_token_id ",
                        image_token_id_, ") but no pixel_values were given");
      return {embeds, attention_mask, position_ids, 0};
    }
    TORCH_CHECK_VALUE(placeholders == visual.size(0) * visual.size(1), "input_ids hold ", placeholders,
                      " image tokens (fusion.image_token_id ", image_token_id_, ") but pixel_values give ",
                      visual.size(0), " images x ", visual.size(1), " visual tokens = ", visual.size(0) * visual.size(1));
    auto mask = image_positions.unsqueeze(-1).expand_as(embeds);
    return {embeds.masked_scatter(mask, visual.to(embeds.scalar_type())), attention_mask, position_ids, 0};
  }

 private:
  FusedInputs prepend(const torch::Tensor& embeds, const torch::Tensor& attention_mask,
                      const torch::Tensor& position_ids, const torch::Tensor& visual) {
    if (!visual.defined()) return {embeds, attention_mask, position_ids, 0};
    const int64_t batch = embeds.size(0), tokens = visual.size(1);
    TORCH_CHECK_VALUE(visual.size(0) == batch, "pixel_values: fusion.image_token_id -1 prepends one image per row, got ",
                      visual.size(0), " images for ", batch, " rows of input_ids");
    auto mask = attention_mask.defined() ? attention_mask : torch::ones({batch, embeds.size(1)}, embeds.options().dtype(torch::kLong));
    auto full_mask = torch::cat({torch::ones({batch, tokens}, mask.options()), mask}, 1);
    TORCH_CHECK_VALUE(!position_ids.defined(), "position_ids: not supported when fusion.image_token_id is -1");
    return {torch::cat({visual.to(embeds.scalar_type()), embeds}, 1), full_mask, torch::Tensor(), tokens};
  }

  int64_t image_token_id_;
};

std::shared_ptr<Fusion> build_splice(const SpliceConfig& c, const BuildContext& b) {
  if (b.visual_width != 0 && b.visual_width != b.llm_hidden) {
    throw ConfigError("abstractor: fusion \"splice\" places the visual tokens in the text, so they must be as wide "
                      "as llm.hidden " + std::to_string(b.llm_hidden) + "; the abstractor gives " +
                      std::to_string(b.visual_width) + " (abstractor.kind \"identity\" needs vision features that wide; "
                      "\"perceiver\" needs \"project\": true)");
  }
  if (c.image_token_id >= b.llm_vocab) {
    throw ConfigError("fusion.image_token_id: " + std::to_string(c.image_token_id) +
                      " is outside the vocabulary [0, llm.vocab " + std::to_string(b.llm_vocab) + ")");
  }
  return std::make_shared<SpliceFusion>(c.image_token_id);
}

const bool splice_registered = register_kind<Fusion, SpliceConfig>("splice", splice_schema(), build_splice);

}  // namespace
}  // namespace vlmzoo::models
