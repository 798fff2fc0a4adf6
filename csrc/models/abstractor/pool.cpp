// abstractor kind "pool": average-pools the vision features over their square patch grid (stride x
// stride patches become one token, as LLaVA-OneVision/NeXT-Video pool to fit a token budget), then
// LLaVA-1.5's MLP projector. features [N, S*S, Dv] -> visual [N, (S/stride)^2, D_llm].
// Pooling comes first: it commutes with the first linear, so the projector runs on 1/stride^2 of the tokens.
#include <cmath>

#include "models/abstractor/projector_layers.h"
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct PoolConfig : SlotConfig {
  int stride = 2;
  int depth = 2;
  std::string act = "gelu";
  bool bias = true;
};

const config::Schema<PoolConfig>& pool_schema() {
  static const auto schema = config::Schema<PoolConfig>()
                                 .integer("stride", &PoolConfig::stride, {1, 64, false})
                                 .integer("depth", &PoolConfig::depth, {1, 64, false})
                                 .choice("act", &PoolConfig::act, config::activation_names())
                                 .boolean("bias", &PoolConfig::bias);
  return schema;
}

// The side of a square grid of `tokens` patches, or 0 when `tokens` is not a square.
int64_t grid_side(int64_t tokens) {
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(tokens))));
  return side * side == tokens ? side : 0;
}

class PoolAbstractor : public Abstractor {
 public:
  PoolAbstractor(const PoolConfig& c, const BuildContext& b, int64_t side)
      : stride_(c.stride), side_(side), act_(c.act), policy_(b.policy) {
    layers = register_module("layers", projector_layers(b.input_width, b.llm_hidden, c.depth, c.bias, b.options));
  }
  int64_t output_tokens() const override { return (side_ / stride_) * (side_ / stride_); }
  torch::Tensor forward(const torch::Tensor& features, const AbstractorText&) override {
    const auto n = features.size(0), width = features.size(2);
    // [N, S*S, D] -> [N, D, S, S]: patches are stored row by row, as the ViT flattens its grid.
    auto grid = features.transpose(1, 2).reshape({n, width, side_, side_});
    auto pooled = torch::avg_pool2d(grid, {stride_, stride_}, {stride_, stride_});
    return run_projector(layers, pooled.flatten(2).transpose(1, 2), act_, policy_->fused);
  }
  double flops(int64_t images) const override {
    return 2.0 * images * output_tokens() * count_parameters(*this);
  }

  torch::nn::ModuleList layers;

 private:
  int64_t stride_, side_;
  std::string act_;
  nn::KernelPolicyPtr policy_;
};

std::shared_ptr<Abstractor> build_pool(const PoolConfig& c, const BuildContext& b) {
  if (b.input_width == 0) throw ConfigError("abstractor.kind: \"pool\" needs a vision encoder, but vision.kind is \"none\"");
  const int64_t side = grid_side(b.input_tokens);
  if (side == 0) {
    throw ConfigError("abstractor.kind: \"pool\" needs a square grid of patch features, but the vision encoder gives " +
                      std::to_string(b.input_tokens) + " tokens per image (a class token kept? use vision.select \"default\")");
  }
  if (side % c.stride != 0) {
    throw ConfigError("abstractor.stride: " + std::to_string(c.stride) + " does not divide the " + std::to_string(side) +
                      "x" + std::to_string(side) + " patch grid");
  }
  return std::make_shared<PoolAbstractor>(c, b, side);
}

const bool pool_registered = register_kind<Abstractor, PoolConfig>("pool", pool_schema(), build_pool);

}  // namespace
}  // namespace vlmzoo::models
