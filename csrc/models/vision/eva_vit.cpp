// vision kind "eva_vit": BLIP-2's EVA ViT-g as transformers implements it (Blip2VisionModel, also
// InstructBlipVisionModel; Li et al. 2023, "BLIP-2", after Fang et al. 2022, "EVA"): conv patches with
// bias, a class token and position embeddings held as parameters, no pre-norm, pre-LN layers whose
// attention is one fused qkv linear without bias plus separate q and v biases (keys get none), and a
// post-LayerNorm over all tokens. The output is that last hidden state, class token included.
//   pixel_values [N, C, S, S] -> features [N, (S / patch)^2 + 1, hidden]
#include "models/registry.h"
#include "models/schema_blocks.h"
#include "nn/vit.h"

#include <cmath>

namespace vlmzoo::models {
namespace {

using config::Schema;

struct EvaVitConfig : SlotConfig {
  int image_size = 224, patch_size = 14, channels = 3, hidden = 1408, layers = 39, heads = 16, mlp = 6144;
  std::string act = "gelu";
  double eps = 1e-6;
  bool qkv_bias = true;

  int patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int tokens() const { return patches() + 1; }
};

void check_eva_vit(JsonReader& r, EvaVitConfig& c) {
  config::require_divides(r, "patch_size", c.patch_size, "image_size", c.image_size);
  config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
}

const Schema<EvaVitConfig>& eva_vit_schema() {
  using C = EvaVitConfig;
  static const auto schema = transformer_shape(Schema<C>()
                                                   .integer("image_size", &C::image_size, config::kImageSize)
                                                   .integer("patch_size", &C::patch_size, config::kImageSize)
                                                   .integer("channels", &C::channels, config::kCount))
                                 .integer("mlp", &C::mlp, config::kWidth)
                                 .choice("act", &C::act, config::activation_names())
                                 .number("eps", &C::eps)
                                 .boolean("qkv_bias", &C::qkv_bias)
                                 .after(check_eva_vit);
  return schema;
}

// Blip2Attention: qkv [3D, D] without bias; q_bias, v_bias [D] (the keys' bias is zero); o_proj with bias.
class EvaAttentionImpl : public torch::nn::Module {
 public:
  EvaAttentionImpl(const EvaVitConfig& c, nn::KernelPolicyPtr policy, const torch::TensorOptions& o)
      : heads_(c.heads), policy_(std::move(policy)) {
    qkv = register_module("qkv", nn::Linear(c.hidden, 3 * c.hidden, false, o));
    if (c.qkv_bias) {
      q_bias = register_parameter("q_bias", torch::empty({c.hidden}, o));
      v_bias = register_parameter("v_bias", torch::empty({c.hidden}, o));
    }
    o_proj = register_module("o_proj", nn::Linear(c.hidden, c.hidden, true, o));
  }

  torch::Tensor forward(const torch::Tensor& x) {  // x: [N, T, D]
    const int64_t n = x.size(0), t = x.size(1), d = x.size(2), head_dim = d / heads_;
    torch::Tensor bias;
    if (q_bias.defined()) bias = torch::cat({q_bias, torch::zeros_like(q_bias), v_bias});
    auto qkv_states = qkv->forward_with_bias(x, bias).view({n, t, 3, heads_, head_dim}).permute({2, 0, 3, 1, 4});
    auto out = nn::attention(qkv_states[0], qkv_states[1], qkv_states[2], {}, 1.0 / std::sqrt(double(head_dim)),
                             policy_->fused);  // [N, H, T, d]
    return o_proj(out.transpose(1, 2).reshape({n, t, d}));
  }

  nn::Linear qkv{nullptr}, o_proj{nullptr};
  torch::Tensor q_bias, v_bias;

 private:
  int64_t heads_;
  nn::KernelPolicyPtr policy_;
};
TORCH_MODULE(EvaAttention);

// Blip2EncoderLayer: x + attn(norm1(x)), then h + mlp(norm2(h)).
class EvaLayerImpl : public torch::nn::Module {
 public:
  EvaLayerImpl(const EvaVitConfig& c, const nn::KernelPolicyPtr& policy, const torch::TensorOptions& o) {
    norm1 = register_module("norm1", nn::LayerNorm(c.hidden, c.eps, policy, o));
    attn = register_module("attn", EvaAttention(c, policy, o));
    norm2 = register_module("norm2", nn::LayerNorm(c.hidden, c.eps, policy, o));
    mlp = register_module("mlp", nn::Mlp(c.hidden, c.mlp, c.hidden, c.act, true, policy, o));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = x + attn(norm1(x));
    return h + mlp(norm2(h));
  }

  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  EvaAttention attn{nullptr};
  nn::Mlp mlp{nullptr};
};
TORCH_MODULE(EvaLayer);

class EvaVitEncoder : public VisionEncoder {
 public:
  EvaVitEncoder(const EvaVitConfig& c, const BuildContext& b) : c_(c) {
    const auto& o = b.options;
    patch_embed = register_module("patch_embed", nn::PatchConv(c.channels, c.hidden, c.patch_size, true, o));
    class_embed = register_parameter("class_embed", torch::empty({1, 1, c.hidden}, o));
    position_embed = register_parameter("position_embed", torch::empty({1, c.tokens(), c.hidden}, o));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(EvaLayer(c, b.policy, o));
    post_norm = register_module("post_norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
  }

  int64_t output_width() const override { return c_.hidden; }
  int64_t output_tokens() const override { return c_.tokens(); }

  torch::Tensor forward(const torch::Tensor& pixel_values) override {
    nn::check_pixel_values(pixel_values, c_.channels, c_.image_size, c_.image_size,
                           "vision.channels, vision.image_size");
    auto dtype = patch_embed->weight.scalar_type();
    auto patches = patch_embed(pixel_values.to(dtype)).flatten(2).transpose(1, 2);  // [N, P, D]
    auto x = torch::cat({class_embed.expand({patches.size(0), 1, c_.hidden}), patches}, 1) + position_embed;
    for (const auto& layer : *layers) x = layer->as<EvaLayerImpl>()->forward(x);
    return post_norm(x);
  }
  // Blip2VisionModel's hidden_states: the embeddings, then every layer's output (before post_layernorm).
  torch::Tensor forward_hidden_states(const torch::Tensor& pixel_values, std::vector<torch::Tensor>& states) override {
    nn::check_pixel_values(pixel_values, c_.channels, c_.image_size, c_.image_size,
                           "vision.channels, vision.image_size");
    auto dtype = patch_embed->weight.scalar_type();
    auto patches = patch_embed(pixel_values.to(dtype)).flatten(2).transpose(1, 2);  // [N, P, D]
    states.push_back(torch::cat({class_embed.expand({patches.size(0), 1, c_.hidden}), patches}, 1) + position_embed);
    for (const auto& layer : *layers) states.push_back(layer->as<EvaLayerImpl>()->forward(states.back()));
    return post_norm(states.back());
  }

  double flops(int64_t images) const override {
    const double d = c_.hidden, m = c_.mlp, t = c_.tokens(), p = c_.patches();
    double per_image = 2 * p * c_.channels * c_.patch_size * c_.patch_size * d;
    per_image += c_.layers * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d);  // qkv + o, MLP; scores + mixing
    return images * per_image;
  }

  nn::PatchConv patch_embed{nullptr};
  torch::Tensor class_embed, position_embed;  // [1, 1, D], [1, tokens, D]
  torch::nn::ModuleList layers;
  nn::LayerNorm post_norm{nullptr};

 private:
  EvaVitConfig c_;
};

const bool eva_vit_registered = register_kind<VisionEncoder, EvaVitConfig>(
    "eva_vit", eva_vit_schema(),
    [](const EvaVitConfig& c, const BuildContext& b) { return std::make_shared<EvaVitEncoder>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
