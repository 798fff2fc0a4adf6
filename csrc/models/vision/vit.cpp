// vision kind "vit": the CLIP ViT (transformers' CLIPVisionModel: conv patches without bias, class
// token, pre-LN) and the SigLIP ViT (SiglipVisionModel: no class token, post-LN on all tokens), as
// LLaVA reads them: the hidden states of `feature_layers` (0 = embeddings, i = after layer i),
// concatenated on channels, the first token dropped when select is "default".
//   pixel_values [N, C, S, S] -> features [N, tokens, hidden * len(feature_layers)]
// With `pool` the tower is pooled as its own model's pooler_output (a dual encoder's image side):
// "class" = post_norm(class token) (CLIPVisionModel), "map" = the attention-pooling head over
// post_norm(tokens) (SiglipVisionModel's SiglipMultiheadAttentionPoolingHead).
//   pixel_values [N, C, S, S] -> pooled [N, 1, hidden]
// `proj` > 0 holds open_clip's VisionTransformer.proj [hidden, proj] (no bias): open_clip multiplies only its
// pooled class token by it, which a tower read for its tokens (OpenFlamingo's vision_encoder(x)[1]) never
// uses; the parameter is there so the tower holds what the reference holds.
// `post_norm_tokens`: post_norm on every token of the last layer's output, as open_clip >= 2.24's
// VisionTransformer does before pooling (final_ln_after_pool False), so the tokens OpenFlamingo reads from it
// are normed; open_clip 2.16 (and transformers' CLIPVisionModel) leave them as the last layer wrote them.
#include "models/registry.h"
#include "nn/attention_pool.h"
#include "nn/vit.h"

#include <algorithm>

namespace vlmzoo::models {
namespace {

using config::IntRange;
using config::Schema;

struct VitConfig : SlotConfig {
  std::string style = "clip";
  int image_size = 336, patch_size = 14, channels = 3, hidden = 1024, layers = 24, heads = 16, mlp = 4096;
  std::string act = "quick_gelu";
  double eps = 1e-5;
  bool class_token = true, pre_norm = true;
  bool post_norm = true;  // the parameter exists (checkpoints hold it); applied only for siglip
  bool patch_bias = false;
  int proj = 0;  // 0: none; else open_clip's visual.proj [hidden, proj], held, never applied (see top)
  bool post_norm_tokens = false;  // post_norm on the last layer's tokens (open_clip >= 2.24; see top)
  std::vector<int> feature_layers = {-2};
  // "default" drops the first token (the class token; transformers drops it even without one).
  std::string select = "default";
  std::string pool = "none";  // "none" (features as above), "class" or "map"

  int patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int tokens() const { return patches() + (class_token ? 1 : 0); }
  std::vector<int64_t> resolved_feature_layers() const {
    std::vector<int64_t> out;
    for (int layer : feature_layers) out.push_back(layer < 0 ? layer + layers + 1 : layer);
    return out;
  }
};

void apply_style_defaults(JsonReader& r, VitConfig& c) {
  c.style = r.get_choice("style", c.style, {"clip", "siglip"});
  if (c.style == "siglip" && r.has("style")) {
    c.class_token = false;
    c.pre_norm = false;
    c.patch_bias = true;
    c.act = "gelu_tanh";
    c.eps = 1e-6;
    c.select = "full";
    c.feature_layers = {-1};
  }
}

void check_vit(JsonReader& r, VitConfig& c) {
  // A patch size that does not divide the image drops the remainder, as the reference's convolution
  // (SigLIP so400m: 384 / 14 -> 27 x 27 patches).
  if (c.patch_size > c.image_size) {
    r.fail("patch_size", std::to_string(c.patch_size) + " is larger than " + r.path_of("image_size") + " " +
                             std::to_string(c.image_size));
  }
  config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
  if (c.pool != "none") {
    auto layers = c.resolved_feature_layers();
    if (layers.size() != 1 || layers[0] != c.layers) {
      r.fail("feature_layers", "must be [-1] with " + r.path_of("pool") + " \"" + c.pool +
                                   "\": pooling reads the last layer");
    }
    if (c.pool == "class" && !c.class_token) {
      r.fail("pool", "\"class\" needs a class token (" + r.path_of("class_token") + " is false)");
    }
    if (c.proj > 0) {
      r.fail("proj", "is held only for a tower read for its tokens; with " + r.path_of("pool") + " \"" + c.pool +
                         "\" the projection is the head's (head.projection)");
    }
    if (!c.post_norm) r.fail("pool", "\"" + c.pool + "\" applies post_norm, but " + r.path_of("post_norm") + " is false");
  }
  if (c.post_norm_tokens) {
    auto layers = c.resolved_feature_layers();
    if (!c.post_norm) r.fail("post_norm_tokens", "applies post_norm, but " + r.path_of("post_norm") + " is false");
    if (c.pool != "none") {
      r.fail("post_norm_tokens", "is for a tower read for its tokens; with " + r.path_of("pool") + " \"" + c.pool +
                                     "\" post_norm is the pooler's");
    }
    if (layers.size() != 1 || layers[0] != c.layers) {
      r.fail("post_norm_tokens", "norms the last layer's tokens, so " + r.path_of("feature_layers") + " must be [-1]");
    }
  }
  for (int layer : c.feature_layers) {
    if (layer > c.layers || layer < -(c.layers + 1)) {
      r.fail("feature_layers", std::to_string(layer) + " is out of range: hidden states run from " +
                                   std::to_string(-(c.layers + 1)) + " to " + std::to_string(c.layers) +
                                   " (0 = embeddings) for " + r.path_of("layers") + " " + std::to_string(c.layers));
    }
  }
}

const Schema<VitConfig>& vit_schema() {
  static const auto schema = Schema<VitConfig>()
                                 .before(apply_style_defaults)
                                 .choice("style", &VitConfig::style, {"clip", "siglip"})
                                 .integer("image_size", &VitConfig::image_size, config::kImageSize)
                                 .integer("patch_size", &VitConfig::patch_size, config::kImageSize)
                                 .integer("channels", &VitConfig::channels, config::kCount)
                                 .integer("hidden", &VitConfig::hidden, config::kWidth)
                                 .integer("layers", &VitConfig::layers, config::kCount)
                                 .integer("heads", &VitConfig::heads, config::kCount)
                                 .integer("mlp", &VitConfig::mlp, config::kWidth)
                                 .choice("act", &VitConfig::act, config::activation_names())
                                 .number("eps", &VitConfig::eps)
                                 .boolean("class_token", &VitConfig::class_token)
                                 .boolean("pre_norm", &VitConfig::pre_norm)
                                 .boolean("post_norm", &VitConfig::post_norm)
                                 .boolean("patch_bias", &VitConfig::patch_bias)
                                 .integer("proj", &VitConfig::proj, {0, config::kWidth.max})
                                 .boolean("post_norm_tokens", &VitConfig::post_norm_tokens)
                                 .int_list("feature_layers", &VitConfig::feature_layers, IntRange{-4097, 4096})
                                 .choice("select", &VitConfig::select, {"default", "full"})
                                 .choice("pool", &VitConfig::pool, {"none", "class", "map"})
                                 .after(check_vit);
  return schema;
}

class VitEncoder : public VisionEncoder {
 public:
  VitEncoder(const VitConfig& c, const BuildContext& b) : c_(c) {
    const auto& o = b.options;
    patch_embed = register_module("patch_embed", nn::PatchConv(c.channels, c.hidden, c.patch_size, c.patch_bias, o));
    if (c.class_token) class_embed = register_parameter("class_embed", torch::empty({c.hidden}, o));
    position_embed = register_module("position_embed", nn::Embedding(c.tokens(), c.hidden, o));
    if (c.pre_norm) pre_norm = register_module("pre_norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
    layers = register_module("layers", torch::nn::ModuleList());
    nn::VitOptions layer{c.hidden, c.heads, c.mlp, c.act, c.eps};
    for (int i = 0; i < c.layers; ++i) layers->push_back(nn::VitLayer(layer, b.policy, o));
    if (c.post_norm) post_norm = register_module("post_norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
    if (c.proj > 0) proj = register_parameter("proj", torch::empty({c.hidden, c.proj}, o));
    if (c.pool == "map") {
      pool_head = register_module("pool_head", nn::AttentionPool(c.hidden, c.heads, c.mlp, c.act, c.eps, b.policy, o));
    }
  }

  int64_t output_width() const override { return int64_t{c_.hidden} * static_cast<int64_t>(c_.feature_layers.size()); }
  int64_t output_tokens() const override {
    if (c_.pool != "none") return 1;
    return c_.tokens() - (c_.select == "default" ? 1 : 0);
  }

  torch::Tensor forward(const torch::Tensor& pixel_values) override {
    if (c_.pool != "none") return pooled(pixel_values);
    auto indices = c_.resolved_feature_layers();
    std::vector<torch::Tensor> states;
    return features(pixel_values, *std::max_element(indices.begin(), indices.end()), states);
  }
  // CLIPVisionModel's hidden_states: pre-LN embeddings, then every layer's output (no post-LN).
  torch::Tensor forward_hidden_states(const torch::Tensor& pixel_values, std::vector<torch::Tensor>& states) override {
    if (c_.pool != "none") return pooled(pixel_values);
    return features(pixel_values, c_.layers, states);
  }

  double flops(int64_t images) const override {
    const double d = c_.hidden, m = c_.mlp, t = c_.tokens(), p = c_.patches();
    auto indices = c_.resolved_feature_layers();
    const double used = static_cast<double>(*std::max_element(indices.begin(), indices.end()));
    double per_image = 2 * p * c_.channels * c_.patch_size * c_.patch_size * d;
    per_image += used * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d);
    if (c_.pool == "map") per_image += 2 * (2 * d * d + 2 * t * d * d) + 4 * t * d + 2 * 2 * d * m;  // q, o; k, v; scores; mlp
    return images * per_image;
  }

  nn::PatchConv patch_embed{nullptr};
  torch::Tensor class_embed, proj;
  nn::Embedding position_embed{nullptr};
  nn::LayerNorm pre_norm{nullptr}, post_norm{nullptr};
  torch::nn::ModuleList layers;
  nn::AttentionPool pool_head{nullptr};

 private:
  // [N, C, S, S] -> [N, 1, hidden]: every layer, post_norm, then the class token or the MAP head.
  torch::Tensor pooled(const torch::Tensor& pixel_values) {
    auto x = embed(pixel_values);
    for (const auto& layer : *layers) x = layer->as<nn::VitLayerImpl>()->forward(x);
    if (c_.pool == "class") return post_norm(x.select(1, 0)).unsqueeze(1);
    return pool_head(post_norm(x)).unsqueeze(1);
  }

  // Runs `depth` layers, appending the embeddings and each layer's output to `states` -> the features LLaVA
  // reads (feature_layers of those states, CLS dropped for select "default"), [N, tokens, hidden x layers].
  torch::Tensor features(const torch::Tensor& pixel_values, int64_t depth, std::vector<torch::Tensor>& states) {
    const size_t first = states.size();
    states.push_back(embed(pixel_values));
    for (int64_t i = 0; i < depth; ++i) states.push_back(layers->ptr<nn::VitLayerImpl>(i)->forward(states.back()));
    std::vector<torch::Tensor> selected;
    for (int64_t index : c_.resolved_feature_layers()) {
      auto s = states[first + index];
      if (c_.post_norm_tokens) s = post_norm(s);  // index is the last layer (checked at parse)
      selected.push_back(c_.select == "default" ? s.narrow(1, 1, s.size(1) - 1) : s);
    }
    return selected.size() == 1 ? selected[0] : torch::cat(selected, -1);
  }

  // [N, C, S, S] -> [N, tokens, hidden]: patches, class token, positions, pre-LN.
  torch::Tensor embed(const torch::Tensor& pixel_values) {
    nn::check_pixel_values(pixel_values, c_.channels, c_.image_size, c_.image_size,
                           "vision.channels, vision.image_size");
    auto dtype = patch_embed->weight.scalar_type();
    auto patches = patch_embed(pixel_values.to(dtype)).flatten(2).transpose(1, 2);  // [N, P, D]
    if (c_.class_token) patches = torch::cat({class_embed.to(dtype).expand({patches.size(0), 1, c_.hidden}), patches}, 1);
    auto x = patches + position_embed->weight.unsqueeze(0);
    return c_.pre_norm ? pre_norm(x) : x;
  }

  VitConfig c_;
};

const bool vit_registered = register_kind<VisionEncoder, VitConfig>(
    "vit", vit_schema(), [](const VitConfig& c, const BuildContext& b) { return std::make_shared<VitEncoder>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
