// llm kind "opt": the OPT decoder (transformers' OPTDecoder + OPTForCausalLM.lm_head; Zhang et al. 2022,
// "OPT: Open Pre-trained Transformer Language Models"), the language model of BLIP-2 OPT:
// word embeddings (optionally of a narrower width, projected in and out), learned positions with
// offset 2 counted from the attention mask, pre-LN layers (biased self-attention, ReLU FFN), a final
// LayerNorm, and an LM head tied to the word embeddings by default.
//   input_ids [B, T] -> embeds [B, T, word_embed_dim] -> (project_in) + positions -> layers
//   -> final norm -> (project_out) -> hidden [B, T, word_embed_dim] -> logits [B, T, vocab]
#include "models/llm/word_lm.h"
#include "models/registry.h"
#include "models/schema_blocks.h"
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::models {
namespace {

// Defaults are transformers' OPTConfig defaults (the opt-125m shape).
struct OptConfig : SlotConfig {
  int vocab = 50272, hidden = 768, layers = 12, heads = 12;
  int mlp = 3072;             // ffn_dim
  int word_embed_dim = 768;   // word_embed_proj_dim; hidden unless given (opt-350m: 512 with hidden 1024)
  int max_positions = 2048;   // learned positions; the table holds max_positions + 2 rows (offset 2)
  std::string act = "relu";
  double eps = 1e-5;          // torch.nn.LayerNorm's default, which OPT uses
  bool tie_embeddings = true, enable_bias = true;
  int bos_token_id = 2, eos_token_id = 2, pad_token_id = 1;
};

void derive_opt_defaults(JsonReader& r, OptConfig& c) {
  if (!r.has("word_embed_dim")) c.word_embed_dim = c.hidden;
  config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
  require_special_ids_in_vocab(r, c);
}

const config::Schema<OptConfig>& opt_schema() {
  using O = OptConfig;
  static const auto schema = transformer_shape(config::Schema<O>().integer("vocab", &O::vocab, config::kWidth))
                                 .integer("mlp", &O::mlp, config::kWidth)
                                 .integer("word_embed_dim", &O::word_embed_dim, config::kWidth)
                                 .integer("max_positions", &O::max_positions, {1, 1 << 24})
                                 .choice("act", &O::act, config::activation_names())
                                 .number("eps", &O::eps)
                                 .boolean("tie_embeddings", &O::tie_embeddings)
                                 .boolean("enable_bias", &O::enable_bias)
                                 .integer("bos_token_id", &O::bos_token_id, config::kTokenId)
                                 .integer("eos_token_id", &O::eos_token_id, config::kTokenId)
                                 .integer("pad_token_id", &O::pad_token_id, config::kTokenId)
                                 .after(derive_opt_defaults);
  return schema;
}

// transformers' OPTDecoderLayer with do_layer_norm_before=True: x + attn(norm(x)), then x + fc2(act(fc1(norm(x)))).
class OptLayerImpl : public torch::nn::Module {
 public:
  OptLayerImpl(const OptConfig& c, const nn::KernelPolicyPtr& policy, const torch::TensorOptions& o) {
    const int64_t head_dim = c.hidden / c.heads;
    attn_norm = register_module("attn_norm", nn::LayerNorm(c.hidden, c.eps, policy, o));
    // OPT scales q by head_dim^-0.5 before the scores; the default softmax scale is the same factor.
    attn = register_module(
        "attn", nn::Attention(nn::AttentionOptions{c.hidden, c.hidden, c.heads, c.heads, head_dim, c.enable_bias},
                              policy, o));
    mlp_norm = register_module("mlp_norm", nn::LayerNorm(c.hidden, c.eps, policy, o));
    mlp = register_module("mlp", nn::Mlp(c.hidden, c.mlp, c.hidden, c.act, c.enable_bias, policy, o));
  }
  // x: [B, T, hidden]; allowed: bool [B|1, 1, T, S].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed, nn::KVCache* cache) {
    auto h = x + attn(attn_norm(x), allowed, std::nullopt, cache);
    return h + mlp(mlp_norm(h));
  }

  nn::LayerNorm attn_norm{nullptr}, mlp_norm{nullptr};
  nn::Attention attn{nullptr};
  nn::Mlp mlp{nullptr};
};
TORCH_MODULE(OptLayer);

constexpr int64_t kPositionOffset = 2;  // OPTLearnedPositionalEmbedding: row = position + 2

class OptLM : public WordEmbeddingLM {
 public:
  OptLM(const OptConfig& c, const BuildContext& b) : c_(c) {
    const auto& o = b.options;
    add_word_embeddings(c.vocab, c.word_embed_dim, o);
    positions = register_module("embed_positions", nn::Embedding(c.max_positions + kPositionOffset, c.hidden, o));
    if (c.word_embed_dim != c.hidden) {
      project_in = register_module("project_in", nn::Linear(c.word_embed_dim, c.hidden, false, o));
      project_out = register_module("project_out", nn::Linear(c.hidden, c.word_embed_dim, false, o));
    }
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(OptLayer(c, b.policy, o));
    norm = register_module("norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
    add_lm_head(c.word_embed_dim, c.tie_embeddings, o);
  }

  // The width other slots see: the word embeddings' (visual tokens are spliced among them).
  int64_t hidden_size() const override { return c_.word_embed_dim; }
  int64_t num_layers() const override { return c_.layers; }

  // OPT counts positions over real tokens only: cumsum(mask) * mask - 1, so padding sits at -1.
  torch::Tensor default_positions(const torch::Tensor& attention_mask, int64_t batch, int64_t tokens,
                                  const torch::Device& device) const override {
    if (!attention_mask.defined()) return LanguageModel::default_positions(attention_mask, batch, tokens, device);
    return mask_positions(attention_mask);
  }
  torch::Tensor prompt_positions(const torch::Tensor& attention_mask) const override {
    return mask_positions(attention_mask);
  }
  torch::Tensor begin(const torch::Tensor& x, DecoderContext& ctx) override {
    check_positions(ctx.positions);
    auto h = project_in ? project_in(x) : x;
    return h + positions(ctx.positions + kPositionOffset).to(h.scalar_type());
  }
  torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    return layers->ptr<OptLayerImpl>(index)->forward(x, ctx.allowed,
                                                     ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor layer_attention(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    return layers->ptr<OptLayerImpl>(index)->attn->forward_own(x, ctx.allowed, std::nullopt,
                                                               ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor finish(const torch::Tensor& x) override {
    auto h = norm(x);
    return project_out ? project_out(h) : h;
  }
  double flops(int64_t tokens) const override {
    const double h = c_.hidden, w = c_.word_embed_dim, seq = static_cast<double>(tokens);
    const double matmul_params = 4 * h * h + 2 * h * c_.mlp;
    const double attention = 4 * seq * seq * h;  // scores and weighted sum over all heads
    const double projections = c_.word_embed_dim != c_.hidden ? 2 * h * w : 0;
    return c_.layers * (2 * seq * matmul_params + attention) + 2 * seq * projections +
           2 * seq * w * static_cast<double>(vocab_);
  }

  nn::Embedding positions{nullptr};
  nn::Linear project_in{nullptr}, project_out{nullptr};  // null when word_embed_dim == hidden
  torch::nn::ModuleList layers;
  nn::LayerNorm norm{nullptr};

 private:
  static torch::Tensor mask_positions(const torch::Tensor& attention_mask) {
    auto mask = attention_mask.to(torch::kLong);
    return mask.cumsum(-1) * mask - 1;
  }
  void check_positions(const torch::Tensor& pos) const {
    if (pos.numel() == 0 || pos.device().type() == torch::kMeta) return;
    auto [low, high] = torch::aminmax(pos);
    TORCH_CHECK_VALUE(low.item<int64_t>() >= -1 && high.item<int64_t>() < c_.max_positions,
                      "position_ids: OPT's learned positions cover [-1, llm.max_positions ", c_.max_positions,
                      "), got [", low.item<int64_t>(), ", ", high.item<int64_t>(), "]");
  }

  OptConfig c_;
};

const bool opt_registered = register_kind<LanguageModel, OptConfig>(
    "opt", opt_schema(), [](const OptConfig& c, const BuildContext& b) { return std::make_shared<OptLM>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
