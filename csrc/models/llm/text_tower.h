#pragma once
// What the text encoders clip_text and siglip_text share (included by those two kind files only):
// the CLIP/SigLIP text transformer (transformers' CLIPTextTransformer / SiglipTextTransformer up to
// last_hidden_state): token + learned position embeddings, pre-LN layers (nn::VitLayer), a final
// LayerNorm. The kinds add the mask (causal or not) and the pooling.
//   input_ids [B, T] -> hidden [B, T, hidden] -> pooled [B, output_width]
#include "models/registry.h"
#include "nn/masks.h"
#include "nn/vit.h"

namespace vlmzoo::models::text_tower {

struct TextTowerConfig : SlotConfig {
  int vocab = 49408, hidden = 512, layers = 12, heads = 8, mlp = 2048, max_positions = 77;
  std::string act = "quick_gelu";
  double eps = 1e-5;
  int bos_token_id = 49406, eos_token_id = 49407, pad_token_id = 1;
};

// The fields every text tower has; a kind adds its own after these.
template <class C>
config::Schema<C> schema_fields() {
  return config::Schema<C>()
      .integer("vocab", &C::vocab, config::kWidth)
      .integer("hidden", &C::hidden, config::kWidth)
      .integer("layers", &C::layers, config::kCount)
      .integer("heads", &C::heads, config::kCount)
      .integer("mlp", &C::mlp, config::kWidth)
      .integer("max_positions", &C::max_positions, {1, 1 << 16})
      .choice("act", &C::act, config::activation_names())
      .number("eps", &C::eps)
      .integer("bos_token_id", &C::bos_token_id, config::kTokenId)
      .integer("eos_token_id", &C::eos_token_id, config::kTokenId)
      .integer("pad_token_id", &C::pad_token_id, config::kTokenId)
      // Token ids are not checked against the vocabulary: transformers' tiny text configs keep CLIP's
      // default bos/eos ids (49406/49407) beside small vocabularies, and only CLIP's eos pooling reads one.
      .after([](JsonReader& r, C& c) { config::require_divides(r, "heads", c.heads, "hidden", c.hidden); });
}

class TextTower : public TextEncoder {
 public:
  TextTower(const TextTowerConfig& c, MaskMode mask, const BuildContext& b) : c_(c), mask_(mask) {
    const auto& o = b.options;
    token_embed = register_module("token_embed", nn::Embedding(c.vocab, c.hidden, o));
    position_embed = register_module("position_embed", nn::Embedding(c.max_positions, c.hidden, o));
    layers = register_module("layers", torch::nn::ModuleList());
    nn::VitOptions layer{c.hidden, c.heads, c.mlp, c.act, c.eps};
    for (int i = 0; i < c.layers; ++i) layers->push_back(nn::VitLayer(layer, b.policy, o));
    final_norm = register_module("final_norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
  }

  int64_t hidden_size() const override { return c_.hidden; }
  int64_t vocab_size() const override { return c_.vocab; }
  int64_t num_layers() const override { return c_.layers; }

  torch::Tensor embed_tokens(const torch::Tensor& input_ids) override {
    TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids: expected [batch, tokens], got ", input_ids.sizes());
    TORCH_CHECK_VALUE(!input_ids.is_floating_point() && !input_ids.is_complex(),
                      "input_ids: expected integer token ids, got ", input_ids.scalar_type());
    check_token_range(input_ids, c_.vocab);
    return token_embed(input_ids);
  }

  // Learned absolute positions 0..T-1, as the reference (position_ids default to arange).
  torch::Tensor begin(const torch::Tensor& x, DecoderContext& ctx) override {
    const int64_t tokens = x.size(1) + ctx.past;
    TORCH_CHECK_VALUE(tokens <= c_.max_positions, "input_ids: ", tokens,
                      " tokens, more than the text encoder's llm.max_positions ", c_.max_positions);
    return x + position_embed->weight.narrow(0, ctx.past, x.size(1)).unsqueeze(0);
  }
  torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    return layers->ptr<nn::VitLayerImpl>(index)->forward(x, ctx.allowed);
  }
  torch::Tensor finish(const torch::Tensor& x) override { return final_norm(x); }

  // input_ids: [B, T]; attention_mask: [B, T] or undefined -> last hidden state [B, T, hidden].
  torch::Tensor last_hidden_state(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
    TORCH_CHECK_VALUE(!attention_mask.defined() || attention_mask.sizes() == input_ids.sizes(),
                      "attention_mask: expected the shape of input_ids ", input_ids.sizes(), ", got ",
                      attention_mask.sizes());
    auto x = embed_tokens(input_ids);
    DecoderContext ctx;
    ctx.mask_mode = mask_;
    ctx.allowed = mask_ == MaskMode::kCausal ? nn::causal_mask(x.size(1), 0, attention_mask, x.device())
                                             : keys_mask(attention_mask, x.size(1));
    x = begin(x, ctx);
    for (int64_t i = 0; i < num_layers(); ++i) x = layer(i, x, ctx);
    return finish(x);
  }

  // Bidirectional: every query (padding ones too) attends to the real keys only, as the reference's
  // create_bidirectional_mask; this matters where a kind pools a padding position (SigLIP's last
  // token). A row without any real token attends to everything (no empty softmax).
  // attention_mask: [B, T] or undefined -> bool [B, 1, T, T] or undefined.
  static torch::Tensor keys_mask(const torch::Tensor& attention_mask, int64_t tokens) {
    if (!attention_mask.defined()) return {};
    auto keys = attention_mask.to(torch::kBool);
    keys = keys | ~keys.any(-1, true);
    return keys.view({keys.size(0), 1, 1, tokens}).expand({keys.size(0), 1, tokens, tokens});
  }

  double flops(int64_t tokens) const override {
    const double d = c_.hidden, m = c_.mlp, t = static_cast<double>(tokens);
    return c_.layers * (2 * t * (4 * d * d + 2 * d * m) + 4 * t * t * d);
  }

  nn::Embedding token_embed{nullptr}, position_embed{nullptr};
  torch::nn::ModuleList layers;
  nn::LayerNorm final_norm{nullptr};

 protected:
  TextTowerConfig c_;
  MaskMode mask_;
};

}  // namespace vlmzoo::models::text_tower
