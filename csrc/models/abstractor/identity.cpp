// abstractor kind "identity": vision features go to the fusion as they are. Spliced into the text they
// must already be as wide as the LM (fusion "splice" checks); cross-attention reads any width.
// features [N, P, D] -> [N, P, D]
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct IdentityConfig : SlotConfig {};

const config::Schema<IdentityConfig>& identity_schema() {
  static const config::Schema<IdentityConfig> schema;
  return schema;
}

class IdentityAbstractor : public Abstractor {
 public:
  IdentityAbstractor(int64_t tokens, int64_t width) : tokens_(tokens), width_(width) {}
  int64_t output_tokens() const override { return tokens_; }
  int64_t output_width() const override { return width_; }
  torch::Tensor forward(const torch::Tensor& features, const AbstractorText&) override { return features; }
  double flops(int64_t) const override { return 0; }

 private:
  int64_t tokens_, width_;
};

std::shared_ptr<Abstractor> build_identity(const IdentityConfig&, const BuildContext& b) {
  return std::make_shared<IdentityAbstractor>(b.input_tokens, b.input_width);
}

const bool identity_registered =
    register_kind<Abstractor, IdentityConfig>("identity", identity_schema(), build_identity);

}  // namespace
}  // namespace vlmzoo::models
