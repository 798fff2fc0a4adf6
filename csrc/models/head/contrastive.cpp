// head kind "contrastive": scores image-text pairs from the two towers' pooled vectors, as
// transformers' CLIPModel (linear projections without bias, logit_scale) and SiglipModel (no
// projections, logit_scale and logit_bias). Radford et al. 2021 (CLIP); Zhai et al. 2023 (SigLIP).
//   pooled image [N, vision width] -> image_embeds [N, E]; pooled text [B, text width] -> text_embeds [B, E]
//   logits_per_text [B, N] = text_embeds @ image_embeds^T * exp(logit_scale) (+ logit_bias)
// `loss` names the training objective the Python side computes: "softmax" (CLIP's symmetric InfoNCE)
// or "sigmoid" (SigLIP's pairwise sigmoid loss).
#include "models/registry.h"
#include "nn/linear.h"

namespace vlmzoo::models {
namespace {

struct ContrastiveConfig : SlotConfig {
  bool projection = true;  // CLIP's visual_projection / text_projection; SigLIP has none
  int dim = 512;           // projection_dim (used when projection)
  double logit_scale_init = 2.6592;  // log(1 / 0.07)
  bool bias = false;                 // SigLIP's logit_bias
  double logit_bias_init = -10.0;
  std::string loss = "softmax";
};

const config::Schema<ContrastiveConfig>& contrastive_schema() {
  using C = ContrastiveConfig;
  static const auto schema = config::Schema<C>()
                                 .boolean("projection", &C::projection)
                                 .integer("dim", &C::dim, config::kWidth)
                                 .number("logit_scale_init", &C::logit_scale_init, false)
                                 .boolean("bias", &C::bias)
                                 .number("logit_bias_init", &C::logit_bias_init, false)
                                 .choice("loss", &C::loss, {"softmax", "sigmoid"});
  return schema;
}

class ContrastiveHead : public SimilarityHead {
 public:
  ContrastiveHead(const ContrastiveConfig& c, const BuildContext& b, int64_t vision_width, int64_t text_width)
      : c_(c), vision_width_(vision_width), text_width_(text_width) {
    const auto& o = b.options;
    if (c.projection) {
      visual_projection = register_module("visual_projection", nn::Linear(vision_width, c.dim, false, o));
      text_projection = register_module("text_projection", nn::Linear(text_width, c.dim, false, o));
    }
    logit_scale = register_parameter("logit_scale", torch::empty({1}, o));
    if (c.bias) logit_bias = register_parameter("logit_bias", torch::empty({1}, o));
  }

  int64_t embed_dim() const override { return c_.projection ? c_.dim : vision_width_; }

  torch::Tensor project_images(const torch::Tensor& pooled) override {
    return c_.projection ? visual_projection(pooled) : pooled;
  }
  torch::Tensor project_texts(const torch::Tensor& pooled) override {
    return c_.projection ? text_projection(pooled) : pooled;
  }

  torch::Tensor logits_per_text(const torch::Tensor& text_embeds, const torch::Tensor& image_embeds) override {
    auto logits = torch::matmul(text_embeds, image_embeds.t()) * logit_scale.exp();
    return c_.bias ? logits + logit_bias : logits;
  }

  void initialize_constants() override {
    torch::NoGradGuard no_grad;
    if (logit_scale.device().type() == torch::kMeta) return;
    logit_scale.fill_(c_.logit_scale_init);
    if (c_.bias) logit_bias.fill_(c_.logit_bias_init);
  }

  double flops(int64_t texts, int64_t images) const override {
    double f = 2.0 * texts * images * embed_dim();
    if (c_.projection) f += 2.0 * c_.dim * (images * vision_width_ + texts * text_width_);
    return f;
  }

  nn::Linear visual_projection{nullptr}, text_projection{nullptr};
  torch::Tensor logit_scale, logit_bias;

 private:
  // x / ||x||_2 over the last dimension, as the reference (no epsilon).
  ContrastiveConfig c_;
  int64_t vision_width_, text_width_;
};

// input_width: the vision tower's pooled width; llm_hidden: the text encoder's pooled width (the
// dual-encoder assembly sets both before building the head).
std::shared_ptr<Head> build_contrastive(const ContrastiveConfig& c, const BuildContext& b) {
  if (!c.projection && b.input_width != b.llm_hidden) {
    throw ConfigError("head.projection: false needs the pooled image and text vectors to be as wide, got vision " +
                      std::to_string(b.input_width) + " and text " + std::to_string(b.llm_hidden));
  }
  return std::make_shared<ContrastiveHead>(c, b, b.input_width, b.llm_hidden);
}

const bool contrastive_registered =
    register_kind<Head, ContrastiveConfig>("contrastive", contrastive_schema(), build_contrastive);

}  // namespace
}  // namespace vlmzoo::models
