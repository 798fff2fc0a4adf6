// head kind "lm": next-token logits from the language model's own output layer (its lm_head, or
// its tied embeddings), so checkpoints keep that weight under llm.*. hidden [B, T, D] -> [B, T, vocab]
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct LmHeadConfig : SlotConfig {};

const config::Schema<LmHeadConfig>& lm_head_schema() {
  static const config::Schema<LmHeadConfig> schema;
  return schema;
}

// Overridable: the view `head` is hookable (the only way to reach tied logits, which have no lm_head).
class LmHead : public Head, public nn::Overridable {
 public:
  torch::Tensor forward(const torch::Tensor& hidden, LanguageModel& lm) override {
    if (overridden()) return call_override({hidden}, [&lm](const auto& in) { return lm.logits(in.at(0)); });
    return lm.logits(hidden);
  }
  torch::Tensor forward_own(const torch::Tensor& hidden, LanguageModel& lm) override { return lm.logits(hidden); }
};

const bool lm_registered = register_kind<Head, LmHeadConfig>(
    "lm", lm_head_schema(), [](const LmHeadConfig&, const BuildContext&) { return std::make_shared<LmHead>(); });

}  // namespace
}  // namespace vlmzoo::models
