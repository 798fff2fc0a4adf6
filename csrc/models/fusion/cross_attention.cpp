// fusion kind "cross_attention": Flamingo's gated cross-attention blocks (Alayrac et al. 2022), run
// before chosen LM layers; the visual tokens never enter the sequence. Matches transformers'
// IdeficsGatedCrossAttentionLayer (RMSNorm, SwiGLU, separate k/v, scalar or vector gates, rows without
// an image zeroed by cross_attention_gate) and OpenFlamingo's GatedCrossAttentionBlock (LayerNorm,
// fused to_kv, GELU feed-forward, only_attend_immediate_media).
//   x [B, T, hidden], visual [B * I, V, W], media mask [B, T, I] ->
//   x += tanh(attn_gate) * (has_image ? o_proj(attn(q = q_proj(norm(x)), k, v = proj(visual of the row))) : 0)
//   x += tanh(mlp_gate) * mlp(norm(x))
// Placement: "idefics" puts a block before layer i when i % every == 0 (layer 0 included);
// "openflamingo" when (i + 1) % every == 0. Media masking: a token reads only the latest image at or
// before it (an image = a run of image tokens), none before the first; or the caller's image_attention_mask.
// In generate the visual keys and values are computed once per block and kept in ctx.cross_caches.
#include "models/registry.h"
#include "nn/mlp.h"
#include "nn/norms.h"

#include <ATen/record_function.h>

namespace vlmzoo::models {
namespace {

struct CrossAttentionConfig : SlotConfig {
  int image_token_id = 32001;  // IDEFICS's <image>; -1: every token reads every image of its row
  int every = 1;
  std::string placement = "idefics";  // or "openflamingo"
  std::string media = "latest";  // "latest" image at or before a token (both references) or "all" before it
  int heads = 32;
  int head_dim = 0;  // 0: llm.hidden / heads
  std::string kv = "separate";  // or "fused" (OpenFlamingo's to_kv)
  std::string norm = "rms";  // "rms" (IDEFICS) or "layer" (OpenFlamingo)
  bool qk_norm = false;      // norms over head_dim on q and k (IDEFICS qk_layer_norms)
  std::string mlp_type = "gated";  // "gated" (SwiGLU, IDEFICS) or "plain" (OpenFlamingo's FeedForward)
  int mlp = 0;  // 0: 4 x llm.hidden
  std::string act = "silu";
  std::string gate = "scalar";  // or "vector" (one gate per channel)
  bool bias = false;
  double eps = 1e-6;
};

const config::Schema<CrossAttentionConfig>& cross_attention_schema() {
  using C = CrossAttentionConfig;
  static const auto schema = config::Schema<C>()
                                 .integer("image_token_id", &C::image_token_id, {-1, config::kTokenId.max})
                                 .integer("every", &C::every, config::kCount)
                                 .choice("placement", &C::placement, {"idefics", "openflamingo"})
                                 .choice("media", &C::media, {"latest", "all"})
                                 .integer("heads", &C::heads, config::kCount)
                                 .integer("head_dim", &C::head_dim, {0, 1 << 20})
                                 .choice("kv", &C::kv, {"separate", "fused"})
                                 .choice("norm", &C::norm, {"rms", "layer"})
                                 .boolean("qk_norm", &C::qk_norm)
                                 .choice("mlp_type", &C::mlp_type, {"gated", "plain"})
                                 .integer("mlp", &C::mlp, {0, 1 << 20})
                                 .choice("act", &C::act, config::activation_names())
                                 .choice("gate", &C::gate, {"scalar", "vector"})
                                 .boolean("bias", &C::bias)
                                 .number("eps", &C::eps);
  return schema;
}

// RMSNorm or LayerNorm under one name, so checkpoints read `attn_norm.weight` either way.
class Norm : public torch::nn::Module, public nn::Overridable {
 public:
  Norm(bool rms, int64_t dim, double eps, const BuildContext& b) {
    if (rms) {
      rms_ = nn::RMSNorm(dim, eps, b.policy, b.options);
      weight = register_parameter("weight", rms_->weight);
    } else {
      layer_ = nn::LayerNorm(dim, eps, b.policy, b.options);
      weight = register_parameter("weight", layer_->weight);
      bias = register_parameter("bias", layer_->bias);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (overridden()) return call_override({x}, [this](const auto& in) { return forward_own(in.at(0)); });
    return forward_own(x);
  }
  torch::Tensor forward_own(const torch::Tensor& x) { return rms_ ? rms_->forward_own(x) : layer_->forward_own(x); }
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0)); }
  torch::Tensor weight, bias;

 private:
  nn::RMSNorm rms_{nullptr};
  nn::LayerNorm layer_{nullptr};
};

class GatedCrossAttentionBlock : public torch::nn::Module, public nn::Overridable {
 public:
  GatedCrossAttentionBlock(const CrossAttentionConfig& c, int64_t hidden, int64_t head_dim, int64_t mlp,
                           const BuildContext& b)
      : c_(c), hidden_(hidden), head_dim_(head_dim), visual_width_(b.visual_width), policy_(b.policy) {
    const auto& o = b.options;
    const bool rms = c.norm == "rms";
    const int64_t inner = c.heads * head_dim;
    attn_norm = register_module("attn_norm", std::make_shared<Norm>(rms, hidden, c.eps, b));
    q_proj = register_module("q_proj", nn::Linear(hidden, inner, c.bias, o));
    if (c.kv == "fused") {
      kv_proj = register_module("kv_proj", nn::Linear(visual_width_, 2 * inner, c.bias, o));
    } else {
      k_proj = register_module("k_proj", nn::Linear(visual_width_, inner, c.bias, o));
      v_proj = register_module("v_proj", nn::Linear(visual_width_, inner, c.bias, o));
    }
    if (c.qk_norm) {
      q_norm = register_module("q_norm", std::make_shared<Norm>(rms, head_dim, c.eps, b));
      k_norm = register_module("k_norm", std::make_shared<Norm>(rms, head_dim, c.eps, b));
    }
    o_proj = register_module("o_proj", nn::Linear(inner, hidden, c.bias, o));
    const auto gate_shape = c.gate == "vector" ? std::vector<int64_t>{1, 1, hidden} : std::vector<int64_t>{1};
    attn_gate = register_parameter("attn_gate", torch::zeros(gate_shape, o));
    mlp_norm = register_module("mlp_norm", std::make_shared<Norm>(rms, hidden, c.eps, b));
    if (c.mlp_type == "gated") {
      gated_mlp = register_module("mlp", nn::GatedMlp(hidden, mlp, c.act, c.bias, b.policy, o));
    } else {
      plain_mlp = register_module("mlp", nn::Mlp(hidden, mlp, hidden, c.act, c.bias, b.policy, o));
    }
    mlp_gate = register_parameter("mlp_gate", torch::zeros(gate_shape, o));
  }

  // x: [B, T, hidden]; ctx.visual [B * I, V, W]; ctx.media_mask bool [B, T, I]; cache: this block's
  // keys and values (generate) or null.
  torch::Tensor forward(const torch::Tensor& x, DecoderContext& ctx, nn::KVCache* cache) {
    if (!overridden()) return forward_own(x, ctx, cache);
    // The view takes (hidden, visual, media_mask); the forward's own visual and mask run with its cache.
    return call_override({x, ctx.visual, ctx.media_mask}, [&](const std::vector<torch::Tensor>& in) {
      if (in.at(1).is_same(ctx.visual) && in.at(2).is_same(ctx.media_mask)) return forward_own(in[0], ctx, cache);
      return run_alone(in);  // a pre-hook gave other media: their keys and values, no cache
    });
  }

  // inputs: hidden [B, T, hidden], visual [B * I, V, W], media mask bool [B, T, I] (undefined: every token
  // reads every image of its row).
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override {
    TORCH_CHECK_VALUE(inputs.size() >= 2 && inputs[0].defined() && inputs[1].defined(),
                      "a gated cross-attention block takes (hidden_states, visual[, media_mask])");
    const auto& x = inputs[0];
    const auto& visual = inputs[1];
    TORCH_CHECK_VALUE(x.dim() == 3 && x.size(2) == hidden_, "hidden_states: expected [batch, tokens, ", hidden_,
                      "], got ", x.sizes());
    TORCH_CHECK_VALUE(visual.dim() == 3 && visual.size(2) == visual_width_ && x.size(0) > 0 &&
                          visual.size(0) % x.size(0) == 0,
                      "visual: expected [batch x images, tokens, ", visual_width_, "] for a batch of ", x.size(0),
                      ", got ", visual.sizes());
    const int64_t images = visual.size(0) / x.size(0);
    DecoderContext ctx;
    ctx.visual = visual;
    ctx.media_mask = inputs.size() > 2 && inputs[2].defined()
                         ? inputs[2].to(torch::kBool)
                         : torch::ones({x.size(0), x.size(1), images}, x.options().dtype(torch::kBool));
    TORCH_CHECK_VALUE(ctx.media_mask.dim() == 3 && ctx.media_mask.size(0) == x.size(0) &&
                          ctx.media_mask.size(1) == x.size(1) && ctx.media_mask.size(2) == images,
                      "media_mask: expected [batch ", x.size(0), ", tokens ", x.size(1), ", images ", images, "], got ",
                      ctx.media_mask.sizes());
    return forward_own(x, ctx, nullptr);
  }

  torch::Tensor forward_own(const torch::Tensor& x, DecoderContext& ctx, nn::KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1);
    auto heads = [&](const torch::Tensor& t) { return t.view({batch, t.size(1), c_.heads, head_dim_}).transpose(1, 2); };
    torch::Tensor k, v;
    if (cache && cache->length > 0) {
      k = cache->k;
      v = cache->v;
    } else {
      RECORD_FUNCTION("vlmzoo::cross_attention_kv", std::vector<c10::IValue>());
      auto visual = ctx.visual.to(x.scalar_type()).reshape({batch, -1, visual_width_});  // [B, I * V, W]
      if (kv_proj) {
        auto kv = kv_proj(visual).chunk(2, -1);
        k = heads(kv[0]);
        v = heads(kv[1]);
      } else {
        k = heads(k_proj(visual));
        v = heads(v_proj(visual));
      }
      if (k_norm) k = k_norm->forward(k);
      if (cache) {
        cache->k = k;
        cache->v = v;
        cache->length = k.size(2);
      }
    }
    const auto& media = media_state(ctx, k.size(2));
    auto q = heads(q_proj(attn_norm->forward(x)));
    if (q_norm) q = q_norm->forward(q);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    auto attended = nn::attention(q, k, v, media.allowed, scale, policy_->fused);
    attended = o_proj(attended.transpose(1, 2).reshape({batch, tokens, c_.heads * head_dim_}));
    if (!media.every_token_has_one) attended = attended * media.has_image.to(attended.scalar_type());
    auto y = torch::addcmul(x, torch::tanh(attn_gate), attended);
    auto normed = mlp_norm->forward(y);
    auto fed = gated_mlp ? gated_mlp(normed) : plain_mlp(normed);
    return torch::addcmul(y, torch::tanh(mlp_gate), fed);
  }

  // What every block reads from ctx.media_mask, derived once per call (or decode step).
  struct MediaState {
    torch::Tensor allowed;    // bool [B, 1, T, I * V]
    torch::Tensor has_image;  // bool [B, T, 1]
    bool every_token_has_one = true;
  };

  static const MediaState& media_state(DecoderContext& ctx, int64_t keys) {
    auto& slot = ctx.media_state;
    if (const auto* state = std::any_cast<MediaState>(&slot)) return *state;
    const auto& mask = ctx.media_mask;  // [B, T, I]
    const int64_t batch = mask.size(0), tokens = mask.size(1), images = mask.size(2), per_image = keys / images;
    MediaState state;
    state.has_image = mask.any(-1, /*keepdim=*/true);  // [B, T, 1]
    state.every_token_has_one = state.has_image.all().item<bool>();
    // A row with no image attends anywhere (no all-masked softmax) and is zeroed, as IDEFICS does.
    auto allowed = mask.unsqueeze(-1).expand({batch, tokens, images, per_image}).reshape({batch, tokens, images * per_image});
    state.allowed = (allowed | state.has_image.logical_not()).unsqueeze(1);
    if (state.allowed.all().item<bool>()) state.allowed = torch::Tensor();  // one image per row: no mask at all
    slot = std::move(state);
    return *std::any_cast<MediaState>(&slot);
  }

  std::shared_ptr<Norm> attn_norm, mlp_norm, q_norm, k_norm;
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, kv_proj{nullptr}, o_proj{nullptr};
  nn::GatedMlp gated_mlp{nullptr};
  nn::Mlp plain_mlp{nullptr};
  torch::Tensor attn_gate, mlp_gate;

 private:
  CrossAttentionConfig c_;
  int64_t hidden_, head_dim_, visual_width_;
  nn::KernelPolicyPtr policy_;
};

class CrossAttentionFusion : public Fusion {
 public:
  CrossAttentionFusion(const CrossAttentionConfig& c, const BuildContext& b, int64_t head_dim)
      : c_(c), hidden_(b.llm_hidden), head_dim_(head_dim), mlp_(c.mlp > 0 ? c.mlp : 4 * b.llm_hidden),
        visual_width_(b.visual_width), visual_tokens_(b.visual_tokens) {
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < b.llm_layers; ++i) {
      const bool here = c.placement == "idefics" ? i % c.every == 0 : (i + 1) % c.every == 0;
      block_of_layer_.push_back(here ? static_cast<int64_t>(blocks->size()) : -1);
      if (here) blocks->push_back(std::make_shared<GatedCrossAttentionBlock>(c, hidden_, head_dim_, mlp_, b));
    }
  }

  int64_t image_token_id() const override { return c_.image_token_id; }

  FusedInputs fuse(const torch::Tensor&, const torch::Tensor& embeds, const torch::Tensor& attention_mask,
                   const torch::Tensor& position_ids, const torch::Tensor&, LanguageModel&) override {
    auto positions = position_ids;
    if (!positions.defined() && attention_mask.defined()) {
      // IDEFICS's forward: positions count the real tokens; padding sits at 1.
      auto mask = attention_mask.to(torch::kLong);
      positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1);
    }
    return {embeds, attention_mask, positions, 0};
  }

  torch::Tensor media_mask(const torch::Tensor& input_ids, const torch::Tensor& image_attention_mask,
                           const torch::Tensor& visual) const override {
    const int64_t batch = input_ids.size(0), tokens = input_ids.size(1);
    auto image_tokens = c_.image_token_id >= 0 ? (input_ids == c_.image_token_id) : torch::Tensor();
    if (!visual.defined()) {
      const int64_t count = image_tokens.defined() ? image_tokens.sum().item<int64_t>() : 0;
      TORCH_CHECK_VALUE(count == 0, "input_ids hold ", count, " image tokens (fusion.image_token_id ", c_.image_token_id,
                        ") but no pixel_values were given");
      return {};
    }
    const int64_t n = visual.size(0);
    int64_t images = 0;
    if (image_attention_mask.defined()) {
      images = image_attention_mask.size(2);
      TORCH_CHECK_VALUE(n == batch * images, "pixel_values: ", n, " images for ", batch,
                        " rows of input_ids, but image_attention_mask has ", images,
                        " columns (images per row); pixel_values must be [batch, images, channels, height, width] "
                        "with as many images per row as image_attention_mask has columns");
    } else {
      TORCH_CHECK_VALUE(batch > 0 && n % batch == 0, "pixel_values: ", n, " images do not split evenly over ", batch,
                        " rows of input_ids; pass pixel_values as [batch, images, channels, height, width]");
      images = n / batch;
    }
    torch::Tensor count;  // [B, T]: images begun up to and including each position
    if (image_tokens.defined() && tokens > 0) {
      // An image is a run of image tokens: one token in IDEFICS / OpenFlamingo prompts, a run of
      // placeholders where a prompt was laid out for splice (vlmzoo's tasks).
      auto previous = torch::cat({torch::zeros_like(image_tokens.narrow(1, 0, 1)), image_tokens.narrow(1, 0, tokens - 1)}, 1);
      count = (image_tokens & previous.logical_not()).to(torch::kLong).cumsum(1);
      const int64_t most = count.select(1, tokens - 1).max().item<int64_t>();
      TORCH_CHECK_VALUE(most <= images, "input_ids: a row holds ", most, " images (runs of fusion.image_token_id ",
                        c_.image_token_id, ") but pixel_values give ", images, " images per row");
    }
    if (image_attention_mask.defined()) return image_attention_mask != 0;
    if (!count.defined()) return torch::ones({batch, tokens, images}, input_ids.options().dtype(torch::kBool));
    auto index = torch::arange(1, images + 1, count.options()).view({1, 1, images});
    auto seen = count.unsqueeze(-1);
    return c_.media == "latest" ? seen == index : index <= seen;
  }

  torch::Tensor before_layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    const int64_t block = block_of_layer_.at(index);
    if (block < 0 || !ctx.visual.defined()) return x;
    nn::KVCache* cache = ctx.cross_caches ? &(*ctx.cross_caches).at(index) : nullptr;
    return blocks->ptr<GatedCrossAttentionBlock>(block)->forward(x, ctx, cache);
  }

  int64_t sequence_tokens(int64_t text_tokens, int64_t) const override { return text_tokens; }

  double flops(int64_t tokens, int64_t images) const override {
    const double t = tokens, h = hidden_, inner = static_cast<double>(c_.heads) * head_dim_, m = mlp_;
    const double media = static_cast<double>(images) * visual_tokens_;
    const double per_block = 2 * t * h * inner * 2                      // q, o
                             + 2 * media * visual_width_ * inner * 2    // k, v over the visual tokens
                             + 4 * t * media * inner                    // scores + mixing (upper bound: every image)
                             + 2 * t * h * m * (c_.mlp_type == "gated" ? 3 : 2);
    return static_cast<double>(blocks->size()) * per_block;
  }

  torch::nn::ModuleList blocks;

 private:
  CrossAttentionConfig c_;
  int64_t hidden_, head_dim_, mlp_, visual_width_, visual_tokens_;
  std::vector<int64_t> block_of_layer_;  // per LM layer: its block, or -1
};

std::shared_ptr<Fusion> build_cross_attention(const CrossAttentionConfig& c, const BuildContext& b) {
  if (b.visual_width == 0) {
    throw ConfigError("fusion.kind: \"cross_attention\" reads visual tokens, but vision.kind is \"none\"");
  }
  if (c.image_token_id >= b.llm_vocab) {
    throw ConfigError("fusion.image_token_id: " + std::to_string(c.image_token_id) +
                      " is outside the vocabulary [0, llm.vocab " + std::to_string(b.llm_vocab) + ")");
  }
  int64_t head_dim = c.head_dim;
  if (head_dim == 0) {
    if (b.llm_hidden % c.heads != 0) {
      throw ConfigError("fusion.heads: " + std::to_string(c.heads) + " does not divide llm.hidden " +
                        std::to_string(b.llm_hidden) + " (or give fusion.head_dim)");
    }
    head_dim = b.llm_hidden / c.heads;
  }
  return std::make_shared<CrossAttentionFusion>(c, b, head_dim);
}

const bool cross_attention_registered =
    register_kind<Fusion, CrossAttentionConfig>("cross_attention", cross_attention_schema(), build_cross_attention);

}  // namespace
}  // namespace vlmzoo::models
