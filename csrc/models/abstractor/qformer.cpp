// abstractor kind "qformer": BLIP-2's Querying Transformer with its learned queries and the projection
// into the LM (transformers' Blip2QFormerModel + query_tokens + language_projection; Li et al. 2023,
// "BLIP-2"), and InstructBLIP's, which also reads the instruction (InstructBlipQFormerModel; Dai et al.
// 2023, "InstructBLIP").
//   queries [1, Q, D] (+ instruction embeddings [N, L, D] = word + absolute position) -> LayerNorm ->
//   post-LN BERT layers: self-attention over queries and text, cross-attention of the queries to the
//   image features in layers where index % cross_attention_frequency == 0, the queries' own FFN (text
//   rows take the plain one) -> the Q query rows -> projection.
//   features [N, P, input_width] (+ text [N, L]) -> visual tokens [N, Q, llm hidden]
#include "models/registry.h"
#include "models/schema_blocks.h"
#include "nn/bert.h"

namespace vlmzoo::models {
namespace {

struct QFormerConfig : SlotConfig {
  int queries = 32, hidden = 768, layers = 12, heads = 12, mlp = 3072;
  std::string act = "gelu";
  double eps = 1e-12;
  int cross_attention_frequency = 2;
  int vocab = 30522, max_positions = 512;
  int pad_token_id = 0;  // the word row that gets no gradient (nn.Embedding padding_idx); -1 = none
  bool instruction = false;  // InstructBLIP: reads qformer_input_ids (word and position embeddings)
  // The plain FFN for text rows in every layer (InstructBLIP; BLIP-2's use_qformer_text_input).
  // Default: instruction.
  bool text_ffn = false;
};

void check_qformer(JsonReader& r, QFormerConfig& c) {
  if (!r.has("text_ffn")) c.text_ffn = c.instruction;
  if (c.instruction && !c.text_ffn) r.fail("text_ffn", "must be true when " + r.path_of("instruction") + " is true: the instruction's rows take the text FFN");
  config::require_divides(r, "heads", c.heads, "hidden", c.hidden);
  config::require_token_ids_in_vocab(r, c.vocab, {{"pad_token_id", c.pad_token_id}});
}

const config::Schema<QFormerConfig>& qformer_schema() {
  using C = QFormerConfig;
  static const auto schema = transformer_shape(config::Schema<C>().integer("queries", &C::queries, config::kCount))
                                 .integer("mlp", &C::mlp, config::kWidth)
                                 .choice("act", &C::act, config::activation_names())
                                 .number("eps", &C::eps)
                                 .integer("cross_attention_frequency", &C::cross_attention_frequency, config::kCount)
                                 .integer("vocab", &C::vocab, config::kWidth)
                                 .integer("max_positions", &C::max_positions, config::kWidth)
                                 .integer("pad_token_id", &C::pad_token_id, {-1, config::kTokenId.max})
                                 .boolean("instruction", &C::instruction)
                                 .boolean("text_ffn", &C::text_ffn)
                                 .after(check_qformer);
  return schema;
}

class QFormer : public Abstractor {
 public:
  QFormer(const QFormerConfig& c, const BuildContext& b) : c_(c), input_width_(b.input_width), image_tokens_(b.input_tokens) {
    const auto& o = b.options;
    query_tokens = register_parameter("query_tokens", torch::empty({1, c.queries, c.hidden}, o));
    if (c.instruction) {
      word_embed = register_module("word_embed", nn::Embedding(c.vocab, c.hidden, o));
      position_embed = register_module("position_embed", nn::Embedding(c.max_positions, c.hidden, o));
    }
    layernorm = register_module("layernorm", nn::LayerNorm(c.hidden, c.eps, b.policy, o));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) {
      nn::BertLayerOptions layer{c.hidden, c.heads, c.mlp, c.act, c.eps};
      layer.cross_width = i % c.cross_attention_frequency == 0 ? input_width_ : 0;
      layer.text_ffn = c.text_ffn;
      layer.query_ffn = true;
      layers->push_back(nn::BertLayer(layer, b.policy, o));
    }
    projection = register_module("projection", nn::Linear(c.hidden, b.llm_hidden, true, o));
  }

  int64_t output_tokens() const override { return c_.queries; }
  bool reads_text() const override { return c_.instruction; }

  torch::Tensor forward(const torch::Tensor& features, const AbstractorText& text) override {
    TORCH_CHECK_VALUE(features.dim() == 3 && features.size(-1) == input_width_,
                      "abstractor (qformer): expected image features of width ", input_width_, ", got ",
                      features.dim() == 3 ? std::to_string(features.size(-1)) : "shape " + c10::str(features.sizes()));
    const int64_t n = features.size(0);
    auto x = query_tokens.expand({n, c_.queries, c_.hidden});
    torch::Tensor allowed;  // self-attention: every row sees every query and every real text token
    if (text.input_ids.defined()) {
      x = torch::cat({x, embed_text(text.input_ids)}, 1);
      if (text.attention_mask.defined()) {
        allowed = nn::key_padding_allowed(torch::cat({torch::ones({n, c_.queries}, text.attention_mask.options()),
                                                      text.attention_mask}, 1));
      }
    }
    x = layernorm(x);  // InstructBLIP normalises queries and text together
    auto context = features.to(x.scalar_type());
    for (const auto& layer : *layers) x = layer->as<nn::BertLayerImpl>()->forward(x, allowed, c_.queries, context);
    return projection(x.narrow(1, 0, c_.queries));
  }

  double flops(int64_t images) const override {
    // Per image, over the Q query rows (text rows, when given, add their share on top).
    const double q = c_.queries, d = c_.hidden, m = c_.mlp, p = image_tokens_, w = input_width_;
    double per_image = 0;
    for (int i = 0; i < c_.layers; ++i) {
      per_image += 2 * q * 4 * d * d + 4 * q * q * d;  // self-attention: projections, scores + mixing
      if (i % c_.cross_attention_frequency == 0) {
        per_image += 2 * q * 2 * d * d + 2 * p * 2 * w * d + 4 * q * p * d;  // q, o; k, v over the image; scores + mixing
      }
      per_image += 2 * q * 2 * d * m;  // query FFN
    }
    per_image += 2 * q * d * static_cast<double>(projection->out_features());
    return images * per_image;
  }

  torch::Tensor query_tokens;  // [1, Q, D]
  nn::Embedding word_embed{nullptr}, position_embed{nullptr};
  nn::LayerNorm layernorm{nullptr};
  torch::nn::ModuleList layers;
  nn::Linear projection{nullptr};

 private:
  // ids: [N, L] -> word + absolute position embeddings [N, L, D] (InstructBlipQFormerEmbeddings).
  torch::Tensor embed_text(const torch::Tensor& ids) {
    nn::check_token_ids(ids, c_.vocab, "qformer_input_ids");
    TORCH_CHECK_VALUE(ids.size(1) <= c_.max_positions, "qformer_input_ids: ", ids.size(1),
                      " tokens, more than abstractor.max_positions ", c_.max_positions);
    // padding_idx: the pad row gets no gradient, as in transformers' nn.Embedding(padding_idx=pad_token_id).
    auto words = torch::embedding(word_embed->weight, ids, c_.pad_token_id);
    return words + position_embed->weight.narrow(0, 0, ids.size(1)).unsqueeze(0);
  }

  QFormerConfig c_;
  int64_t input_width_, image_tokens_;
};

std::shared_ptr<Abstractor> build_qformer(const QFormerConfig& c, const BuildContext& b) {
  if (b.input_width == 0) throw ConfigError("abstractor.kind: \"qformer\" needs a vision encoder, but vision.kind is \"none\"");
  return std::make_shared<QFormer>(c, b);
}

const bool qformer_registered = register_kind<Abstractor, QFormerConfig>("qformer", qformer_schema(), build_qformer);

}  // namespace
}  // namespace vlmzoo::models
