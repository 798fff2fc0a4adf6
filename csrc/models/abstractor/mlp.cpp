// abstractor kind "mlp": LLaVA-1.5's projector (transformers' LlavaMultiModalProjector: linear_1,
// GELU, linear_2), `depth` linears deep. features [N, P, Dv] -> visual [N, P, D_llm]
#include "models/abstractor/projector_layers.h"
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct MlpConfig : SlotConfig {
  int depth = 2;
  std::string act = "gelu";
  bool bias = true;
};

const config::Schema<MlpConfig>& mlp_schema() {
  static const auto schema = config::Schema<MlpConfig>()
                                 .integer("depth", &MlpConfig::depth, {1, 64, false})
                                 .choice("act", &MlpConfig::act, config::activation_names())
                                 .boolean("bias", &MlpConfig::bias);
  return schema;
}

class MlpAbstractor : public Abstractor {
 public:
  MlpAbstractor(const MlpConfig& c, const BuildContext& b) : act_(c.act), tokens_(b.input_tokens), policy_(b.policy) {
    layers = register_module("layers", projector_layers(b.input_width, b.llm_hidden, c.depth, c.bias, b.options));
  }
  int64_t output_tokens() const override { return tokens_; }
  torch::Tensor forward(const torch::Tensor& features, const AbstractorText&) override {
    return run_projector(layers, features, act_, policy_->fused);
  }
  double flops(int64_t images) const override { return 2.0 * images * tokens_ * count_parameters(*this); }

  torch::nn::ModuleList layers;

 private:
  std::string act_;
  int64_t tokens_;
  nn::KernelPolicyPtr policy_;
};

std::shared_ptr<Abstractor> build_mlp(const MlpConfig& c, const BuildContext& b) {
  if (b.input_width == 0) throw ConfigError("abstractor.kind: \"mlp\" needs a vision encoder, but vision.kind is \"none\"");
  return std::make_shared<MlpAbstractor>(c, b);
}

const bool mlp_registered = register_kind<Abstractor, MlpConfig>("mlp", mlp_schema(), build_mlp);

}  // namespace
}  // namespace vlmzoo::models
