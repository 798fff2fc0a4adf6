// llm kind "persimmon": the Persimmon decoder (transformers' PersimmonModel + PersimmonForCausalLM.lm_head;
// Adept's Persimmon-8B), the language model of Fuyu: word embeddings, pre-LN layers (LayerNorm with bias),
// one fused query-key-value projection interleaved per head (viewed [B, T, heads, 3, head_dim]), LayerNorm
// over head_dim on queries and keys before rotary embedding of their first rotary_fraction x head_dim
// channels, biased projections, a squared-ReLU MLP, a final LayerNorm and an untied LM head.
//   input_ids [B, T] -> embeds [B, T, hidden] -> layers -> hidden [B, T, hidden] -> logits [B, T, vocab]
#include "models/llm/word_lm.h"
#include "models/registry.h"
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"
#include "nn/rope.h"

#include <cmath>

namespace vlmzoo::models {
namespace {

// Defaults are transformers' PersimmonConfig defaults (persimmon-8b, Fuyu-8B's decoder).
struct PersimmonConfig : SlotConfig {
  int vocab = 262144, hidden = 4096, layers = 36, heads = 64, mlp = 16384;
  int max_positions = 16384;
  double rope_theta = 25000.0;
  double rotary_fraction = 0.5;  // partial_rotary_factor: the share of head_dim that rotates
  double eps = 1e-5;
  bool qk_norm = true;  // qk_layernorm
  std::string act = "relu2";
  bool tie_embeddings = false;
  int bos_token_id = 1, eos_token_id = 2, pad_token_id = 0;

  int head_dim() const { return hidden / heads; }
  int rotary_dim() const { return static_cast<int>(head_dim() * rotary_fraction); }
};

void check_persimmon(JsonReader& r, PersimmonConfig& c) {
  config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
  if (c.rotary_fraction > 1.0) r.fail("rotary_fraction", "must lie in (0, 1], got " + std::to_string(c.rotary_fraction));
  if (c.rotary_dim() < 2 || c.rotary_dim() % 2 != 0) {
    r.fail("rotary_fraction", std::to_string(c.rotary_fraction) + " x head_dim " + std::to_string(c.head_dim()) +
                                  " rotates " + std::to_string(c.rotary_dim()) +
                                  " channels; rotary embedding needs an even number >= 2");
  }
  config::require_token_ids_in_vocab(r, c.vocab, {{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id},
                                                    {"pad_token_id", c.pad_token_id}});
}

const config::Schema<PersimmonConfig>& persimmon_schema() {
  using P = PersimmonConfig;
  static const auto schema = config::Schema<P>()
                                 .integer("vocab", &P::vocab, config::kWidth)
                                 .integer("hidden", &P::hidden, config::kWidth)
                                 .integer("layers", &P::layers, config::kCount)
                                 .integer("heads", &P::heads, config::kCount)
                                 .integer("mlp", &P::mlp, config::kWidth)
                                 .integer("max_positions", &P::max_positions, {1, 1 << 24})
                                 .number("rope_theta", &P::rope_theta)
                                 .number("rotary_fraction", &P::rotary_fraction)
                                 .number("eps", &P::eps)
                                 .boolean("qk_norm", &P::qk_norm)
                                 .choice("act", &P::act, config::activation_names())
                                 .boolean("tie_embeddings", &P::tie_embeddings)
                                 .integer("bos_token_id", &P::bos_token_id, config::kTokenId)
                                 .integer("eos_token_id", &P::eos_token_id, config::kTokenId)
                                 .integer("pad_token_id", &P::pad_token_id, config::kTokenId)
                                 .after(check_persimmon);
  return schema;
}

using PersimmonRope = std::pair<torch::Tensor, torch::Tensor>;

// transformers' PersimmonAttention: qkv is one Linear whose output reads [heads, 3, head_dim] per token.
class PersimmonAttentionImpl : public torch::nn::Module, public nn::Overridable {
 public:
  PersimmonAttentionImpl(const PersimmonConfig& c, const nn::KernelPolicyPtr& policy, const torch::TensorOptions& o)
      : heads_(c.heads), head_dim_(c.head_dim()), policy_(policy) {
    qkv = register_module("qkv", nn::Linear(c.hidden, 3 * c.hidden, true, o));
    if (c.qk_norm) {
      q_norm = register_module("q_norm", nn::LayerNorm(head_dim_, c.eps, policy, o));
      k_norm = register_module("k_norm", nn::LayerNorm(head_dim_, c.eps, policy, o));
    }
    o_proj = register_module("o_proj", nn::Linear(c.hidden, c.hidden, true, o));
  }
  // x: [B, T, hidden]; allowed: bool [B|1, 1, T, S]; rope: (cos, sin) [B, T, rotary_dim].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed, const PersimmonRope& rope,
                        nn::KVCache* cache) {
    if (overridden()) {
      return call_override({x}, [&](const auto& in) { return forward_own(in.at(0), allowed, rope, cache); });
    }
    return forward_own(x, allowed, rope, cache);
  }
  torch::Tensor forward_own(const torch::Tensor& x, const torch::Tensor& allowed, const PersimmonRope& rope,
                            nn::KVCache* cache) {
    const int64_t batch = x.size(0), tokens = x.size(1);
    auto fused = qkv(x).view({batch, tokens, heads_, 3, head_dim_});
    auto q = fused.select(3, 0).contiguous(), k = fused.select(3, 1).contiguous();  // [B, T, H, d]
    auto v = fused.select(3, 2).transpose(1, 2);                                     // [B, H, T, d]
    if (q_norm) {
      q = q_norm(q);
      k = k_norm(k);
    }
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    std::tie(q, k) = nn::apply_rope(q, k, rope.first, rope.second, policy_->fused);
    if (cache) std::tie(k, v) = cache->append(k, v);
    auto out = nn::attention(q, k, v, allowed, 1.0 / std::sqrt(static_cast<double>(head_dim_)), policy_->fused);
    return o_proj(out.transpose(1, 2).reshape({batch, tokens, heads_ * head_dim_}));
  }

  nn::Linear qkv{nullptr}, o_proj{nullptr};
  nn::LayerNorm q_norm{nullptr}, k_norm{nullptr};  // null without qk_norm

 private:
  int64_t heads_, head_dim_;
  nn::KernelPolicyPtr policy_;
};
TORCH_MODULE(PersimmonAttention);

// transformers' PersimmonDecoderLayer: x + attn(norm(x)), then x + fc2(act(fc1(norm(x)))).
class PersimmonLayerImpl : public torch::nn::Module {
 public:
  PersimmonLayerImpl(const PersimmonConfig& c, const nn::KernelPolicyPtr& policy, const torch::TensorOptions& o) {
    attn_norm = register_module("attn_norm", nn::LayerNorm(c.hidden, c.eps, policy, o));
    attn = register_module("attn", PersimmonAttention(c, policy, o));
    mlp_norm = register_module("mlp_norm", nn::LayerNorm(c.hidden, c.eps, policy, o));
    mlp = register_module("mlp", nn::Mlp(c.hidden, c.mlp, c.hidden, c.act, true, policy, o));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed, const PersimmonRope& rope,
                        nn::KVCache* cache) {
    auto h = x + attn->forward(attn_norm(x), allowed, rope, cache);
    return h + mlp(mlp_norm(h));
  }

  nn::LayerNorm attn_norm{nullptr}, mlp_norm{nullptr};
  PersimmonAttention attn{nullptr};
  nn::Mlp mlp{nullptr};
};
TORCH_MODULE(PersimmonLayer);

class PersimmonLM : public WordEmbeddingLM {
 public:
  PersimmonLM(const PersimmonConfig& c, const BuildContext& b) : c_(c), rope_(c.rotary_dim(), c.rope_theta) {
    const auto& o = b.options;
    add_word_embeddings(c.vocab, c.hidden, o);
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(PersimmonLayer(c, b.policy, o));
    norm = register_module("norm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
    add_lm_head(c.hidden, c.tie_embeddings, o);
  }

  int64_t hidden_size() const override { return c_.hidden; }
  int64_t num_layers() const override { return c_.layers; }

  torch::Tensor begin(const torch::Tensor& x, DecoderContext& ctx) override {
    check_positions(ctx.positions);
    ctx.lm_state = rope_.tables(ctx.positions, x.scalar_type());
    return x;
  }
  torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    const auto& rope = std::any_cast<const PersimmonRope&>(ctx.lm_state);
    return layers->ptr<PersimmonLayerImpl>(index)->forward(x, ctx.allowed, rope,
                                                           ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor layer_attention(int64_t index, const torch::Tensor& x, DecoderContext& ctx) override {
    const auto& rope = std::any_cast<const PersimmonRope&>(ctx.lm_state);
    return layers->ptr<PersimmonLayerImpl>(index)->attn->forward_own(
        x, ctx.allowed, rope, ctx.self_caches ? &(*ctx.self_caches)[index] : nullptr);
  }
  torch::Tensor finish(const torch::Tensor& x) override { return norm(x); }
  double flops(int64_t tokens) const override {
    const double h = c_.hidden, seq = static_cast<double>(tokens);
    const double matmul_params = 4 * h * h + 2 * h * c_.mlp;  // qkv (3 h^2), output (h^2), fc1 and fc2
    const double attention = 4 * seq * seq * h;
    return c_.layers * (2 * seq * matmul_params + attention) + 2 * seq * h * static_cast<double>(vocab_);
  }

  torch::nn::ModuleList layers;
  nn::LayerNorm norm{nullptr};

 private:
  // Rotary embedding has no table to run off, but the model was trained on max_positions positions.
  void check_positions(const torch::Tensor& pos) const {
    if (pos.numel() == 0 || pos.device().type() == torch::kMeta) return;
    auto [low, high] = torch::aminmax(pos);
    TORCH_CHECK_VALUE(low.item<int64_t>() >= 0 && high.item<int64_t>() < c_.max_positions,
                      "sequence too long: positions run to ", high.item<int64_t>(), " but llm.max_positions is ",
                      c_.max_positions, " (positions must lie in [0, ", c_.max_positions, "); got [",
                      low.item<int64_t>(), ", ", high.item<int64_t>(), "])");
  }

  PersimmonConfig c_;
  nn::RotaryEmbedding rope_;
};

const bool persimmon_registered = register_kind<LanguageModel, PersimmonConfig>(
    "persimmon", persimmon_schema(),
    [](const PersimmonConfig& c, const BuildContext& b) { return std::make_shared<PersimmonLM>(c, b); });

}  // namespace
}  // namespace vlmzoo::models
