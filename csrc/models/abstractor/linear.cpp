// abstractor kind "linear": LLaVA-1's projector, one linear map. features [N, P, Dv] -> [N, P, D_llm]
#include "models/abstractor/projector_layers.h"
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct LinearConfig : SlotConfig {
  bool bias = true;
};

const config::Schema<LinearConfig>& linear_schema() {
  static const auto schema = config::Schema<LinearConfig>().boolean("bias", &LinearConfig::bias);
  return schema;
}

class LinearAbstractor : public Abstractor {
 public:
  LinearAbstractor(const LinearConfig& c, const BuildContext& b) : tokens_(b.input_tokens) {
    layers = register_module("layers", projector_layers(b.input_width, b.llm_hidden, 1, c.bias, b.options));
  }
  int64_t output_tokens() const override { return tokens_; }
  torch::Tensor forward(const torch::Tensor& features, const AbstractorText&) override {
    return run_projector(layers, features, "", false);
  }
  double flops(int64_t images) const override { return 2.0 * images * tokens_ * count_parameters(*this); }

  torch::nn::ModuleList layers;

 private:
  int64_t tokens_;
};

std::shared_ptr<Abstractor> build_linear(const LinearConfig& c, const BuildContext& b) {
  if (b.input_width == 0) {
    throw ConfigError("abstractor.kind: \"linear\" needs a vision encoder, but vision.kind is \"none\"");
  }
  return std::make_shared<LinearAbstractor>(c, b);
}

const bool linear_registered = register_kind<Abstractor, LinearConfig>("linear", linear_schema(), build_linear);

}  // namespace
}  // namespace vlmzoo::models
