// llm kind "multiway": BEiT-3's multiway transformer (torchscale 0.3.0's BEiT3 text side and Encoder
// with multiway=True, subln=True, normalize_output=True, no_output_layer): text token embeddings, a
// text position table whose positions start at 2 (Fairseq's convention), pre-LN multiway layers
// (nn/multiway.h) and a final per-modality LayerNorm. Wang et al. 2022, "Image as a Foreign Language:
// BEiT Pretraining for All Vision and Vision-Language Tasks"; Bao et al. 2021 (VLMo) for the optional
// vision-language expert.
//   input_ids [B, T] -> embeddings [B, T, hidden]
//   [vision; text] embeddings [B, S, hidden], split -> hidden [B, S, hidden]
#include "models/registry.h"
#include "nn/multiway.h"

namespace vlmzoo::models {
namespace {

// torchscale's EncoderConfig defaults with BEiT-3-base's sizes (unilm beit3 _get_base_config).
struct MultiwayConfig : SlotConfig {
  int vocab = 64010, hidden = 768, layers = 12, heads = 12, mlp = 3072;
  int max_positions = 1024;  // max_source_positions: the text table's rows (positions 2.. use them)
  double eps = 1e-5;
  std::string act = "gelu";
  int pad_token_id = 1;        // XLM-R's <pad>, BEiT-3's tokenizer
  int vl_expert_layers = 0;    // top layers with VLMo's vision-language FFN (ffn.C); 0 in BEiT-3
};

const config::Schema<MultiwayConfig>& multiway_schema() {
  using C = MultiwayConfig;
  static const auto schema =
      config::Schema<C>()
          .integer("vocab", &C::vocab, config::kWidth)
          .integer("hidden", &C::hidden, config::kWidth)
          .integer("layers", &C::layers, config::kCount)
          .integer("heads", &C::heads, config::kCount)
          .integer("mlp", &C::mlp, config::kWidth)
          .integer("max_positions", &C::max_positions, {3, 1 << 16})
          .number("eps", &C::eps)
          .choice("act", &C::act, {"gelu", "relu", "silu"})
          .integer("pad_token_id", &C::pad_token_id, config::kTokenId)
          .integer("vl_expert_layers", &C::vl_expert_layers, config::kNonNegativeCount)
          .after([](JsonReader& r, C& c) {
            config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
            if (c.vl_expert_layers > c.layers) {
              r.fail("vl_expert_layers", std::to_string(c.vl_expert_layers) + " is more than " + r.path_of("layers") +
                                             " " + std::to_string(c.layers));
            }
          });
  return schema;
}

// Fairseq's first position: rows 0 and 1 of each table are never read.
constexpr int64_t kFirstPosition = 2;

class Multiway : public MultiwayTransformer {
 public:
  Multiway(const MultiwayConfig& c, const BuildContext& b) : c_(c) {
    const auto& o = b.options;
    text_embed = register_module("text_embed", nn::Embedding(c.vocab, c.hidden, o));
    embed_positions = register_module("embed_positions", nn::Embedding(c.max_positions, c.hidden, o));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) {
      layers->push_back(nn::MultiwayLayer(options(i >= c.layers - c.vl_expert_layers), b.policy, o));
    }
    layer_norm = register_module("layer_norm", nn::MultiwayLayerNorm(c.hidden, c.eps, b.policy, o));
  }

  int64_t hidden_size() const override { return c_.hidden; }
  int64_t vocab_size() const override { return c_.vocab; }
  int64_t num_layers() const override { return c_.layers; }

  torch::Tensor embed_tokens(const torch::Tensor& input_ids) override {
    TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids: expected [batch, tokens], got ", input_ids.sizes());
    TORCH_CHECK_VALUE(!input_ids.is_floating_point() && !input_ids.is_complex(),
                      "input_ids: expected integer token ids, got ", input_ids.scalar_type());
    check_token_range(input_ids, c_.vocab);
    return text_embed(input_ids);
  }

  // Text positions 2 .. T+1 whatever the padding (torchscale's PositionalEmbedding).
  torch::Tensor begin(const torch::Tensor& x, DecoderContext&) override {
    const int64_t tokens = x.size(1);
    TORCH_CHECK_VALUE(tokens + kFirstPosition <= c_.max_positions, "input_ids: ", tokens,
                      " tokens, more than the text position table holds (llm.max_positions ", c_.max_positions,
                      " rows, positions start at 2: at most ", c_.max_positions - kFirstPosition, " tokens)");
    return x + embed_positions->weight.narrow(0, kFirstPosition, tokens).unsqueeze(0);
  }
  torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    return layers->ptr<nn::MultiwayLayerImpl>(index)->forward(x, 0, ctx.allowed, false);
  }
  torch::Tensor finish(const torch::Tensor& x) override { return layer_norm(x, 0); }

  torch::Tensor embed_text(const torch::Tensor& input_ids) override {
    DecoderContext ctx;
    return begin(embed_tokens(input_ids), ctx);
  }

  torch::Tensor encode(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed, bool joint) override {
    auto h = x;
    for (int64_t i = 0; i < c_.layers; ++i) h = layers->ptr<nn::MultiwayLayerImpl>(i)->forward(h, split, allowed, joint);
    return layer_norm(h, split);
  }

  double flops(int64_t tokens) const override {
    return static_cast<double>(c_.layers) * nn::MultiwayLayerImpl::flops(options(false), tokens);
  }

  nn::Embedding text_embed{nullptr}, embed_positions{nullptr};
  torch::nn::ModuleList layers{nullptr};
  nn::MultiwayLayerNorm layer_norm{nullptr};

 private:
  nn::MultiwayOptions options(bool vl_expert) const {
    return nn::MultiwayOptions{c_.hidden, c_.heads, c_.mlp, c_.eps, c_.act, vl_expert};
  }
  MultiwayConfig c_;
};

const bool multiway_registered = register_kind<LanguageModel, MultiwayConfig>(
    "multiway", multiway_schema(),
    [](const MultiwayConfig& c, const BuildContext& b) { return std::make_shared<Multiway>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
