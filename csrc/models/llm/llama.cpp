// llm kind "llama": the LLaMA decoder (transformers' LlamaModel + LlamaForCausalLM.lm_head):
// word embeddings, pre-RMSNorm layers with rotary GQA attention and SwiGLU, a final RMSNorm.
//   input_ids [B, T] -> embeds [B, T, hidden] -> layers -> hidden [B, T, hidden] -> logits [B, T, vocab]
#include "models/llm/word_lm.h"
#include "models/registry.h"
#include "models/schema_blocks.h"
#include "nn/llama.h"
#include "nn/rope.h"

namespace vlmzoo::models {
namespace {

struct LlamaConfig : SlotConfig {
  int vocab = 32064, hidden = 4096, layers = 32, heads = 32, kv_heads = 32;
  int head_dim = 128;  // hidden / heads unless given
  int mlp = 11008;
  double rope_theta = 10000.0, rms_eps = 1e-5;
  bool tie_embeddings = false;
  int max_positions = 4096;
  bool attention_bias = false, mlp_bias = false;
  std::string act = "silu";
  int bos_token_id = 1, eos_token_id = 2, pad_token_id = 0;
};

void derive_llama_defaults(JsonReader& r, LlamaConfig& c) {
  if (!r.has("kv_heads")) c.kv_heads = c.heads;
  if (!r.has("head_dim")) {
    config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
    c.head_dim = c.hidden / c.heads;
  }
  if (c.head_dim % 2 != 0) r.fail("head_dim", std::to_string(c.head_dim) + " must be even for rotary embeddings");
  config::require_divides(r, "kv_heads", c.kv_heads, "heads", c.heads);
  require_special_ids_in_vocab(r, c);
}

const config::Schema<LlamaConfig>& llama_schema() {
  using L = LlamaConfig;
  static const auto schema = transformer_shape(config::Schema<L>().integer("vocab", &L::vocab, config::kWidth))
                                 .integer("kv_heads", &L::kv_heads, config::kCount)
                                 .integer("head_dim", &L::head_dim, config::kWidth)
                                 .integer("mlp", &L::mlp, config::kWidth)
                                 .number("rope_theta", &L::rope_theta)
                                 .number("rms_eps", &L::rms_eps)
                                 .boolean("tie_embeddings", &L::tie_embeddings)
                                 .integer("max_positions", &L::max_positions, {1, 1 << 24})
                                 .boolean("attention_bias", &L::attention_bias)
                                 .boolean("mlp_bias", &L::mlp_bias)
                                 .choice("act", &L::act, config::activation_names())
                                 .integer("bos_token_id", &L::bos_token_id, config::kTokenId)
                                 .integer("eos_token_id", &L::eos_token_id, config::kTokenId)
                                 .integer("pad_token_id", &L::pad_token_id, config::kTokenId)
                                 .after(derive_llama_defaults);
  return schema;
}

using RopeTables = std::pair<torch::Tensor, torch::Tensor>;

class LlamaLM : public WordEmbeddingLM {
 public:
  LlamaLM(const LlamaConfig& c, const BuildContext& b) : c_(c), rope_(c.head_dim, c.rope_theta) {
    const auto& o = b.options;
    add_word_embeddings(c.vocab, c.hidden, o);
    layers = register_module("layers", torch::nn::ModuleList());
    nn::LlamaLayerOptions layer{c.hidden, c.heads, c.kv_heads, c.head_dim, c.mlp, c.rms_eps, c.attention_bias,
                                c.mlp_bias, c.act};
    for (int i = 0; i < c.layers; ++i) layers->push_back(nn::LlamaLayer(layer, b.policy, o));
    norm = register_module("norm", nn::RMSNorm(c.hidden, c.rms_eps, b.policy, o));
    add_lm_head(c.hidden, c.tie_embeddings, o);
  }

  int64_t hidden_size() const override { return c_.hidden; }
  int64_t num_layers() const override { return c_.layers; }

  torch::Tensor begin(const torch::Tensor& x, DecoderContext& ctx) override {
    ctx.lm_state = rope_.tables(ctx.positions, x.scalar_type());
    return x;
  }
  torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    const auto& rope = std::any_cast<const RopeTables&>(ctx.lm_state);
    return layers->ptr<nn::LlamaLayerImpl>(index)->forward(x, ctx.allowed, rope,
                                                           ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor layer_attention(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    const auto& rope = std::any_cast<const RopeTables&>(ctx.lm_state);
    return layers->ptr<nn::LlamaLayerImpl>(index)->attn->forward_own(
        x, ctx.allowed, rope, ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor finish(const torch::Tensor& x) override { return norm(x); }
  double flops(int64_t tokens) const override {
    const double h = c_.hidden, hd = c_.head_dim, seq = static_cast<double>(tokens);
    const double matmul_params = h * c_.heads * hd * 2 + h * c_.kv_heads * hd * 2 + 3 * h * c_.mlp;
    const double attention = 4 * seq * seq * c_.heads * hd;
    return c_.layers * (2 * seq * matmul_params + attention) + 2 * seq * h * static_cast<double>(vocab_);
  }

  torch::nn::ModuleList layers;
  nn::RMSNorm norm{nullptr};

 private:
  LlamaConfig c_;
  nn::RotaryEmbedding rope_;
};

const bool llama_registered = register_kind<LanguageModel, LlamaConfig>(
    "llama", llama_schema(), [](const LlamaConfig& c, const BuildContext& b) { return std::make_shared<LlamaLM>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
