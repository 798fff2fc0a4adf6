// head kind "image_classification": BEiT-3's image classifier (unilm beit3
// BEiT3ForImageClassification): the vision-only pass's patch tokens (class token excluded) averaged,
// LayerNorm (eps 1e-6), one dense layer to the classes.
//   vision pass hidden [N, 1 + P, D] -> logits [N, classes]
#include "models/registry.h"
#include "nn/linear.h"
#include "nn/norms.h"

namespace vlmzoo::models {
namespace {

struct ImageClassificationConfig : SlotConfig {
  int classes = 1000;  // ImageNet-1k
  double eps = 1e-6;
};

const config::Schema<ImageClassificationConfig>& image_classification_schema() {
  using C = ImageClassificationConfig;
  static const auto schema =
      config::Schema<C>().integer("classes", &C::classes, config::kWidth).number("eps", &C::eps);
  return schema;
}

class ImageClassificationHead : public EncoderHead {
 public:
  ImageClassificationHead(const ImageClassificationConfig& c, const BuildContext& b) : c_(c), hidden_(b.llm_hidden) {
    fc_norm = register_module("fc_norm", nn::LayerNorm(hidden_, c.eps, b.policy, b.options));
    head = register_module("head", nn::Linear(hidden_, c.classes, true, b.options));
  }

  std::map<std::string, torch::Tensor> outputs(const torch::Tensor& hidden, EncoderMode mode) override {
    if (mode != EncoderMode::kVision) return {};
    return {{"logits", head(fc_norm(hidden.narrow(1, 1, hidden.size(1) - 1).mean(1)))}};
  }
  double flops(int64_t batch) const override { return 2.0 * batch * hidden_ * c_.classes; }

  nn::LayerNorm fc_norm{nullptr};
  nn::Linear head{nullptr};

 private:
  ImageClassificationConfig c_;
  int64_t hidden_;
};

const bool image_classification_registered = register_kind<Head, ImageClassificationConfig>(
    "image_classification", image_classification_schema(),
    [](const ImageClassificationConfig& c, const BuildContext& b) -> std::shared_ptr<Head> {
      return std::make_shared<ImageClassificationHead>(c, b);
    });

}  // namespace
}  // namespace vlmzoo::models
