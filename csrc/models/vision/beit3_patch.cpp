// vision kind "beit3_patch": BEiT-3's image embedding (torchscale 0.3.0's VisionEmbedding with
// prepend_cls_token and contain_mask_token, plus the vision position table, the Encoder's
// embed_positions.A): conv patches with bias, a class token first, learned positions starting at 2.
// Its width is the multiway encoder's (the assembly passes the llm width). mask_token is BEiT-3's
// masked-image-modeling token: checkpoints hold it; only pretraining reads it.
//   pixel_values [N, C, S, S] -> embeddings [N, 1 + (S/p)^2, hidden]
#include "models/registry.h"
#include "nn/linear.h"
#include "nn/vit.h"

namespace vlmzoo::models {
namespace {

struct Beit3PatchConfig : SlotConfig {
  int image_size = 224, patch_size = 16, channels = 3;
  int patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

const config::Schema<Beit3PatchConfig>& beit3_patch_schema() {
  using C = Beit3PatchConfig;
  static const auto schema = config::Schema<C>()
                                 .integer("image_size", &C::image_size, config::kImageSize)
                                 .integer("patch_size", &C::patch_size, config::kImageSize)
                                 .integer("channels", &C::channels, {1, 64})
                                 .after([](JsonReader& r, C& c) {
                                   if (c.patch_size > c.image_size) {
                                     r.fail("patch_size", std::to_string(c.patch_size) + " is larger than " +
                                                              r.path_of("image_size") + " " +
                                                              std::to_string(c.image_size));
                                   }
                                 });
  return schema;
}

class Beit3Patch : public VisionEncoder {
 public:
  Beit3Patch(const Beit3PatchConfig& c, const BuildContext& b) : c_(c), hidden_(b.llm_hidden) {
    const auto& o = b.options;
    proj = register_module("proj", nn::PatchConv(c.channels, hidden_, c.patch_size, true, o));
    cls_token = register_parameter("cls_token", torch::empty({1, 1, hidden_}, o));
    mask_token = register_parameter("mask_token", torch::empty({1, 1, hidden_}, o));
    // class token + patches, after Fairseq's two unused rows
    embed_positions = register_module("embed_positions", nn::Embedding(c.patches() + 3, hidden_, o));
  }

  int64_t output_width() const override { return hidden_; }
  int64_t output_tokens() const override { return c_.patches() + 1; }

  torch::Tensor forward(const torch::Tensor& pixel_values) override {
    const auto& p = pixel_values;
    // float, finite, [N, channels, size, size]: the same checks and messages as the other vision kinds
    nn::check_pixel_values(p, c_.channels, c_.image_size, c_.image_size, "vision.channels, vision.image_size");
    auto patches = proj(p.to(cls_token.scalar_type())).flatten(2).transpose(1, 2);  // [N, P, hidden]
    auto x = torch::cat({cls_token.expand({p.size(0), 1, hidden_}), patches}, 1);
    return x + embed_positions->weight.narrow(0, 2, x.size(1)).unsqueeze(0);
  }

  double flops(int64_t images) const override {
    return 2.0 * images * c_.patches() * c_.channels * c_.patch_size * c_.patch_size * hidden_;
  }

  nn::PatchConv proj{nullptr};
  torch::Tensor cls_token, mask_token;
  nn::Embedding embed_positions{nullptr};

 private:
  Beit3PatchConfig c_;
  int64_t hidden_;
};

std::shared_ptr<VisionEncoder> build_beit3_patch(const Beit3PatchConfig& c, const BuildContext& b) {
  if (b.llm_hidden <= 0) {
    throw ConfigError("vision.kind: \"beit3_patch\" takes its width from a multiway encoder; it runs in the "
                      "multiway_encoder assembly (family beit3)");
  }
  return std::make_shared<Beit3Patch>(c, b);
}

const bool beit3_patch_registered =
    register_kind<VisionEncoder, Beit3PatchConfig>("beit3_patch", beit3_patch_schema(), build_beit3_patch);

}  // namespace
}  // namespace vlmzoo::models
