// head kind "vqa": BEiT-3's visual question answering as classification over an answer set (unilm
// beit3 BEiT3ForVisualQuestionAnswering): the joint pass's first token (the image's class token)
// through a pooler (LayerNorm eps 1e-6, dense, tanh), then dense to 2 * hidden, LayerNorm, exact GELU,
// dense to the classes.
//   vision-language pass hidden [B, V + T, D] -> logits [B, classes]
#include "models/registry.h"
#include "nn/linear.h"
#include "nn/norms.h"

namespace vlmzoo::models {
namespace {

struct VqaConfig : SlotConfig {
  int classes = 3129;  // VQAv2's answer set
  double eps = 1e-6;
};

const config::Schema<VqaConfig>& vqa_schema() {
  static const auto schema = config::Schema<VqaConfig>()
                                 .integer("classes", &VqaConfig::classes, config::kWidth)
                                 .number("eps", &VqaConfig::eps);
  return schema;
}

class VqaHead : public EncoderHead {
 public:
  VqaHead(const VqaConfig& c, const BuildContext& b) : c_(c), hidden_(b.llm_hidden), policy_(b.policy) {
    const auto& o = b.options;
    pooler_norm = register_module("pooler_norm", nn::LayerNorm(hidden_, c.eps, b.policy, o));
    pooler = register_module("pooler", nn::Linear(hidden_, hidden_, true, o));
    fc1 = register_module("fc1", nn::Linear(hidden_, 2 * hidden_, true, o));
    norm = register_module("norm", nn::LayerNorm(2 * hidden_, c.eps, b.policy, o));
    fc2 = register_module("fc2", nn::Linear(2 * hidden_, c.classes, true, o));
  }

  std::map<std::string, torch::Tensor> outputs(const torch::Tensor& hidden, EncoderMode mode) override {
    if (mode != EncoderMode::kVisionLanguage) return {};
    auto pooled = torch::tanh(pooler(pooler_norm(hidden.select(1, 0))));
    return {{"logits", fc2(nn::activation(norm(fc1(pooled)), "gelu", policy_->fused))}};
  }
  double flops(int64_t batch) const override {
    return 2.0 * batch * (hidden_ * hidden_ + 2.0 * hidden_ * hidden_ + 2.0 * hidden_ * c_.classes);
  }

  nn::LayerNorm pooler_norm{nullptr}, norm{nullptr};
  nn::Linear pooler{nullptr}, fc1{nullptr}, fc2{nullptr};

 private:
  VqaConfig c_;
  int64_t hidden_;
  nn::KernelPolicyPtr policy_;
};

const bool vqa_registered = register_kind<Head, VqaConfig>(
    "vqa", vqa_schema(),
    [](const VqaConfig& c, const BuildContext& b) -> std::shared_ptr<Head> { return std::make_shared<VqaHead>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
