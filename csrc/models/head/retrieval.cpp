// head kind "retrieval": BEiT-3's image-text retrieval head (unilm beit3 BEiT3ForRetrieval): each
// modality encoded alone, its first token (the image's class token, the text's <s>) projected
// without bias and L2-normalised; similarity scaled by exp(logit_scale), log(1 / 0.07) at the start;
// trained with CLIP's symmetric contrastive loss.
//   vision pass hidden [N, S, D] -> image_embeds [N, D]; text pass hidden [B, T, D] -> text_embeds [B, D]
//   logits_per_text [B, N] = text_embeds @ image_embeds^T * exp(logit_scale); logits_per_image [N, B]
#include "models/registry.h"
#include "nn/linear.h"

#include <cmath>

namespace vlmzoo::models {
namespace {

struct RetrievalConfig : SlotConfig {
  double logit_scale_init = 2.659260036932778;  // log(1 / 0.07)
};

const config::Schema<RetrievalConfig>& retrieval_schema() {
  static const auto schema =
      config::Schema<RetrievalConfig>().number("logit_scale_init", &RetrievalConfig::logit_scale_init, false);
  return schema;
}

class RetrievalHead : public EncoderHead {
 public:
  RetrievalHead(const RetrievalConfig& c, const BuildContext& b) : c_(c), hidden_(b.llm_hidden) {
    const auto& o = b.options;
    vision_head = register_module("vision_head", nn::Linear(hidden_, hidden_, false, o));
    language_head = register_module("language_head", nn::Linear(hidden_, hidden_, false, o));
    logit_scale = register_parameter("logit_scale", torch::empty({}, o));  // a scalar, as the reference
  }

  std::map<std::string, torch::Tensor> outputs(const torch::Tensor& hidden, EncoderMode mode) override {
    auto first = hidden.select(1, 0);
    if (mode == EncoderMode::kVision) return {{"image_embeds", normalize(vision_head(first))}};
    if (mode == EncoderMode::kText) return {{"text_embeds", normalize(language_head(first))}};
    return {};
  }
  bool separate_passes() const override { return true; }
  void pair(std::map<std::string, torch::Tensor>& out) override {
    auto logits = torch::matmul(out.at("text_embeds"), out.at("image_embeds").t()) * logit_scale.exp();
    out["logits_per_text"] = logits;
    out["logits_per_image"] = logits.t();
  }
  void initialize_constants() override {
    torch::NoGradGuard no_grad;
    if (logit_scale.device().type() != torch::kMeta) logit_scale.fill_(c_.logit_scale_init);
  }
  double flops(int64_t batch) const override { return 2.0 * batch * 2 * hidden_ * hidden_ + 2.0 * batch * batch * hidden_; }

  nn::Linear vision_head{nullptr}, language_head{nullptr};
  torch::Tensor logit_scale;

 private:
  // F.normalize(x, dim=-1): x / max(||x||, 1e-12)
  static torch::Tensor normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }
  RetrievalConfig c_;
  int64_t hidden_;
};

const bool retrieval_registered = register_kind<Head, RetrievalConfig>(
    "retrieval", retrieval_schema(), [](const RetrievalConfig& c, const BuildContext& b) -> std::shared_ptr<Head> {
      return std::make_shared<RetrievalHead>(c, b);
    });

}  // namespace
}  // namespace vlmzoo::models
