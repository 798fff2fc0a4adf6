// abstractor kind "identity": vision features go to the LM as they are; they must already be as
// wide as the LM. features [N, P, D] -> [N, P, D]
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
  explicit IdentityAbstractor(int64_t tokens) : tokens_(tokens) {}
  int64_t output_tokens() const override { return tokens_; }
  torch::Tensor forward(const torch::Tensor& features, const AbstractorText&) override { return features; }
  double flops(int64_t) const override { return 0; }

 private:
  int64_t tokens_;
};

std::shared_ptr<Abstractor> build_identity(const IdentityConfig&, const BuildContext& b) {
  if (b.input_width != 0 && b.input_width != b.llm_hidden) {
    throw ConfigError("abstractor.kind: \"identity\" needs vision features as wide as llm.hidden " +
                      std::to_string(b.llm_hidden) + ", got " + std::to_string(b.input_width));
  }
  return std::make_shared<IdentityAbstractor>(b.input_tokens);
}

const bool identity_registered =
    register_kind<Abstractor, IdentityConfig>("identity", identity_schema(), build_identity);

}  // namespace
}  // namespace vlmzoo::models
