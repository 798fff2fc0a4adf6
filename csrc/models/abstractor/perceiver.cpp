// abstractor kind "perceiver": Flamingo's Perceiver Resampler (Alayrac et al. 2022, "Flamingo").
// Matches transformers' IdeficsPerceiverResampler (separate q/k/v, ReLU MLP, optional q/k LayerNorms)
// and OpenFlamingo's PerceiverResampler (fused to_kv, GELU MLP), both without biases.
//   OpenFlamingo's optional embeddings (max_num_frames, max_num_media; off by default, as in its Flamingo):
//     media [B, I, F, P, W] += frame_embs[f]; flattened to [B, I, F * P, W]; += media_time_embs[i] ([I, 1, W])
//   learned latents [L, W]; per layer:
//     latents += o_proj(attn(q = q_proj(LN(latents)), k, v = proj(cat(LN(media), LN(latents)))))
//     latents += fc2(act(fc1(LN(latents))))
//   then a final LayerNorm (and, with "project", a Linear into the LM width for fusion "splice").
//   features [N, P, W] -> visual tokens [N, L, W] (or [N, L, llm hidden] with project); with F frames per
//   image slot (pixel_values [B, I, F, C, H, W]) the F consecutive features of a slot are read as one medium:
//   [N * F, P, W] -> [N, L, W].
#include "models/registry.h"
#include "nn/norms.h"

namespace vlmzoo::models {
namespace {

struct PerceiverConfig : SlotConfig {
  int latents = 64, layers = 6, heads = 16, head_dim = 96;
  int mlp = 0;  // 0: 4 x the vision width (both references)
  std::string act = "relu";  // IDEFICS: relu; OpenFlamingo: gelu
  bool bias = false;
  std::string kv = "separate";  // "separate" k_proj / v_proj (IDEFICS), "fused" kv_proj (OpenFlamingo's to_kv)
  bool qk_norm = false;  // LayerNorm over head_dim on q and k (IDEFICS qk_layer_norms_perceiver)
  double eps = 1e-5;
  bool project = false;  // a Linear into the LM width after the final norm (a perceiver under "splice")
  int max_frames = 0;  // rows of frame_embs [max_frames, W] (OpenFlamingo's max_num_frames); 0: none
  int max_media = 0;   // rows of media_time_embs [max_media, 1, W] (OpenFlamingo's max_num_media); 0: none
};

const config::Schema<PerceiverConfig>& perceiver_schema() {
  using C = PerceiverConfig;
  static const auto schema = config::Schema<C>()
                                 .integer("latents", &C::latents, config::kCount)
                                 .integer("layers", &C::layers, config::kCount)
                                 .integer("heads", &C::heads, config::kCount)
                                 .integer("head_dim", &C::head_dim, config::kWidth)
                                 .integer("mlp", &C::mlp, {0, 1 << 20})
                                 .choice("act", &C::act, config::activation_names())
                                 .boolean("bias", &C::bias)
                                 .choice("kv", &C::kv, {"separate", "fused"})
                                 .boolean("qk_norm", &C::qk_norm)
                                 .number("eps", &C::eps)
                                 .boolean("project", &C::project)
                                 .integer("max_frames", &C::max_frames, {0, 4096})
                                 .integer("max_media", &C::max_media, {0, 4096});
  return schema;
}

// One resampler layer: attention from the latents to [media; latents], then the feed-forward.
class PerceiverLayer : public torch::nn::Module {
 public:
  PerceiverLayer(const PerceiverConfig& c, int64_t width, int64_t mlp, const BuildContext& b) : c_(c), policy_(b.policy) {
    const auto& o = b.options;
    const int64_t inner = static_cast<int64_t>(c.heads) * c.head_dim;
    media_norm = register_module("media_norm", nn::LayerNorm(width, c.eps, b.policy, o));
    latents_norm = register_module("latents_norm", nn::LayerNorm(width, c.eps, b.policy, o));
    q_proj = register_module("q_proj", nn::Linear(width, inner, c.bias, o));
    if (c.kv == "fused") {
      kv_proj = register_module("kv_proj", nn::Linear(width, 2 * inner, c.bias, o));
    } else {
      k_proj = register_module("k_proj", nn::Linear(width, inner, c.bias, o));
      v_proj = register_module("v_proj", nn::Linear(width, inner, c.bias, o));
    }
    if (c.qk_norm) {
      q_norm = register_module("q_norm", nn::LayerNorm(c.head_dim, c.eps, b.policy, o));
      k_norm = register_module("k_norm", nn::LayerNorm(c.head_dim, c.eps, b.policy, o));
    }
    o_proj = register_module("o_proj", nn::Linear(inner, width, c.bias, o));
    mlp_norm = register_module("mlp_norm", nn::LayerNorm(width, c.eps, b.policy, o));
    fc1 = register_module("fc1", nn::Linear(width, mlp, c.bias, o));
    fc2 = register_module("fc2", nn::Linear(mlp, width, c.bias, o));
  }

  // media: [N, P, W]; latents: [N, L, W] -> [N, L, W]
  torch::Tensor forward(const torch::Tensor& media, torch::Tensor latents) {
    const int64_t n = latents.size(0), l = latents.size(1);
    auto normed = latents_norm(latents);
    auto source = torch::cat({media_norm(media), normed}, 1);  // [N, P + L, W]
    const int64_t s = source.size(1);
    auto heads = [&](const torch::Tensor& t, int64_t len) { return t.view({n, len, c_.heads, c_.head_dim}).transpose(1, 2); };
    auto q = heads(q_proj(normed), l);
    torch::Tensor k, v;
    if (kv_proj) {
      auto kv = kv_proj(source).chunk(2, -1);
      k = heads(kv[0], s);
      v = heads(kv[1], s);
    } else {
      k = heads(k_proj(source), s);
      v = heads(v_proj(source), s);
    }
    if (q_norm) {
      q = q_norm(q);
      k = k_norm(k);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(c_.head_dim));
    auto out = nn::attention(q, k, v, torch::Tensor(), scale, policy_->fused);  // [N, H, L, d]
    latents = latents + o_proj(out.transpose(1, 2).reshape({n, l, c_.heads * c_.head_dim}));
    return latents + fc2(nn::activation(fc1(mlp_norm(latents)), c_.act, policy_->fused));
  }

  nn::LayerNorm media_norm{nullptr}, latents_norm{nullptr}, q_norm{nullptr}, k_norm{nullptr}, mlp_norm{nullptr};
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, kv_proj{nullptr}, o_proj{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  PerceiverConfig c_;
  nn::KernelPolicyPtr policy_;
};

class Perceiver : public Abstractor {
 public:
  Perceiver(const PerceiverConfig& c, const BuildContext& b)
      : c_(c), width_(b.input_width), image_tokens_(b.input_tokens), mlp_(c.mlp > 0 ? c.mlp : 4 * b.input_width) {
    const auto& o = b.options;
    latents = register_parameter("latents", torch::empty({c.latents, width_}, o));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(std::make_shared<PerceiverLayer>(c, width_, mlp_, b));
    norm = register_module("norm", nn::LayerNorm(width_, c.eps, b.policy, o));
    if (c.max_frames > 0) frame_embs = register_parameter("frame_embs", torch::empty({c.max_frames, width_}, o));
    if (c.max_media > 0) media_time_embs = register_parameter("media_time_embs", torch::empty({c.max_media, 1, width_}, o));
    if (c.project) projection = register_module("projection", nn::Linear(width_, b.llm_hidden, true, o));
    out_width_ = c.project ? b.llm_hidden : width_;
  }

  int64_t output_tokens() const override { return c_.latents; }
  int64_t output_width() const override { return out_width_; }

  torch::Tensor forward(const torch::Tensor& features, const AbstractorText& text) override {
    TORCH_CHECK_VALUE(features.dim() == 3 && features.size(-1) == width_,
                      "abstractor (perceiver): expected media features [images, tokens, ", width_, "], got ",
                      features.sizes());
    auto media = place_media(features.to(latents.scalar_type()), text);
    auto x = latents.unsqueeze(0).expand({media.size(0), c_.latents, width_});
    for (const auto& layer : *layers) x = layer->as<PerceiverLayer>()->forward(media, x);
    x = norm(x);
    return projection ? projection(x) : x;
  }

  // features [N * F, P, W] -> media [N, F * P, W] with the frame and media-time embeddings added.
  torch::Tensor place_media(torch::Tensor media, const AbstractorText& text) const {
    const int64_t frames = text.frames, p = media.size(1);
    TORCH_CHECK_VALUE(frames >= 1 && media.size(0) % frames == 0, "abstractor (perceiver): ", media.size(0),
                      " feature rows do not split into images of ", frames, " frames");
    const int64_t n = media.size(0) / frames;
    if (frame_embs.defined()) {
      TORCH_CHECK_VALUE(frames <= frame_embs.size(0), "pixel_values: ", frames, " frames per image, but the perceiver's "
                        "frame_embs has ", frame_embs.size(0), " rows (abstractor.max_frames ", c_.max_frames, ")");
      media = (media.view({n, frames, p, width_}) + frame_embs.narrow(0, 0, frames).view({1, frames, 1, width_}));
    }
    media = media.reshape({n, frames * p, width_});
    if (media_time_embs.defined()) {
      const int64_t per_row = text.images_per_row;
      TORCH_CHECK_VALUE(per_row > 0, "pixel_values: abstractor.max_media ", c_.max_media, " adds media-time embeddings by "
                        "each image's place in its row; pass pixel_values as [batch, images, (frames,) channels, "
                        "height, width], not [images, channels, height, width]");
      TORCH_CHECK_VALUE(per_row <= media_time_embs.size(0), "pixel_values: ", per_row, " images per row, but the "
                        "perceiver's media_time_embs has ", media_time_embs.size(0), " rows (abstractor.max_media ",
                        c_.max_media, ")");
      TORCH_CHECK_VALUE(n % per_row == 0, "abstractor (perceiver): ", n, " images do not split into rows of ", per_row);
      media = (media.view({n / per_row, per_row, frames * p, width_}) + media_time_embs.narrow(0, 0, per_row).unsqueeze(0))
                  .view({n, frames * p, width_});
    }
    return media;
  }

  double flops(int64_t images) const override {
    const double l = c_.latents, w = width_, p = image_tokens_, inner = static_cast<double>(c_.heads) * c_.head_dim;
    const double per_layer = 2 * l * w * inner              // q
                             + 2 * (p + l) * w * 2 * inner  // k, v over media and latents
                             + 4 * l * (p + l) * inner      // scores + mixing
                             + 2 * l * inner * w            // o
                             + 2 * l * 2 * w * mlp_;        // feed-forward
    double per_image = c_.layers * per_layer;
    if (projection) per_image += 2 * l * w * out_width_;
    return images * per_image;
  }

  torch::Tensor latents;  // [L, W]
  torch::Tensor frame_embs, media_time_embs;  // [max_frames, W], [max_media, 1, W] or undefined
  torch::nn::ModuleList layers;
  nn::LayerNorm norm{nullptr};
  nn::Linear projection{nullptr};

 private:
  PerceiverConfig c_;
  int64_t width_, image_tokens_, mlp_, out_width_ = 0;
};

std::shared_ptr<Abstractor> build_perceiver(const PerceiverConfig& c, const BuildContext& b) {
  if (b.input_width == 0) throw ConfigError("abstractor.kind: \"perceiver\" needs a vision encoder, but vision.kind is \"none\"");
  return std::make_shared<Perceiver>(c, b);
}

const bool perceiver_registered =
    register_kind<Abstractor, PerceiverConfig>("perceiver", perceiver_schema(), build_perceiver);

}  // namespace
}  // namespace vlmzoo::models
