#include "nn/bert.h"

namespace vlmzoo::nn {

namespace {
AttentionOptions bert_attention(const BertLayerOptions& o, int64_t context_dim) {
  return AttentionOptions{o.hidden, context_dim, o.heads, o.heads, o.hidden / o.heads, true};
}
}  // namespace

BertLayerImpl::BertLayerImpl(const BertLayerOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options)
    : options_(o) {
  TORCH_CHECK(o.hidden % o.heads == 0, "BertLayer: heads ", o.heads, " do not divide hidden ", o.hidden);
  TORCH_CHECK(o.text_ffn || o.query_ffn, "BertLayer: a layer needs the text FFN, the query FFN or both");
  attn = register_module("attn", Attention(bert_attention(o, o.hidden), policy, options));
  attn_norm = register_module("attn_norm", LayerNorm(o.hidden, o.eps, policy, options));
  if (o.cross_width > 0) {
    cross_attn = register_module("cross_attn", Attention(bert_attention(o, o.cross_width), policy, options));
    cross_norm = register_module("cross_norm", LayerNorm(o.hidden, o.eps, policy, options));
  }
  if (o.text_ffn) {
    ffn = register_module("ffn", Mlp(o.hidden, o.mlp, o.hidden, o.act, true, policy, options));
    ffn_norm = register_module("ffn_norm", LayerNorm(o.hidden, o.eps, policy, options));
  }
  if (o.query_ffn) {
    query_ffn = register_module("query_ffn", Mlp(o.hidden, o.mlp, o.hidden, o.act, true, policy, options));
    query_ffn_norm = register_module("query_ffn_norm", LayerNorm(o.hidden, o.eps, policy, options));
  }
}

torch::Tensor BertLayerImpl::cross(const torch::Tensor& x, const torch::Tensor& context,
                                   const torch::Tensor& context_allowed) {
  TORCH_CHECK_VALUE(context.defined(), "BertLayer: this layer cross-attends but no context states were given");
  return cross_norm(cross_attn(x, context_allowed, std::nullopt, nullptr, context) + x);
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& allowed, int64_t queries,
                                     const torch::Tensor& context, const torch::Tensor& context_allowed) {
  const int64_t tokens = x.size(1);
  TORCH_CHECK(queries >= 0 && queries <= tokens, "BertLayer: queries ", queries, " outside [0, ", tokens, "]");
  auto h = attn_norm(attn(x, allowed) + x);
  if (queries == 0) {
    TORCH_CHECK(!ffn.is_empty(), "BertLayer: text rows given to a layer without the text FFN");
    if (has_cross_attention()) h = cross(h, context, context_allowed);
    return ffn_norm(ffn(h) + h);
  }
  TORCH_CHECK(!query_ffn.is_empty(), "BertLayer: query rows given to a layer without the query FFN");
  auto q = h.narrow(1, 0, queries);  // [B, Q, hidden]
  if (has_cross_attention()) q = cross(q, context, context_allowed);
  q = query_ffn_norm(query_ffn(q) + q);
  if (queries == tokens) return q;
  TORCH_CHECK_VALUE(!ffn.is_empty(), "BertLayer: ", tokens - queries,
                    " text rows given to a layer without the text FFN (a Q-Former that reads no text)");
  auto t = h.narrow(1, queries, tokens - queries);  // [B, T - Q, hidden]
  return torch::cat({q, ffn_norm(ffn(t) + t)}, 1);
}

torch::Tensor key_padding_allowed(const torch::Tensor& attention_mask) {
  if (!attention_mask.defined()) return {};
  return attention_mask.ne(0).view({attention_mask.size(0), 1, 1, attention_mask.size(1)});
}

void check_token_ids(const torch::Tensor& ids, int64_t vocab, const std::string& what) {
  TORCH_CHECK_VALUE(ids.dim() == 2, what, ": expected [batch, tokens], got ", ids.sizes());
  TORCH_CHECK_VALUE(!ids.is_floating_point() && !ids.is_complex() && ids.scalar_type() != torch::kBool, what,
                    ": expected integer token ids, got ", ids.scalar_type());
  if (ids.numel() == 0 || ids.device().type() == torch::kMeta) return;
  const auto low = ids.min().item<int64_t>(), high = ids.max().item<int64_t>();
  TORCH_CHECK_VALUE(low >= 0 && high < vocab, what, ": token ids must lie in [0, ", vocab, "), got [", low, ", ",
                    high, "]");
}

BertEncoderImpl::BertEncoderImpl(const BertEncoderOptions& o, KernelPolicyPtr policy,
                                 const torch::TensorOptions& options)
    : options_(o) {
  const int64_t d = o.layer.hidden;
  word_embed = register_module("word_embed", Embedding(o.vocab, d, options));
  position_embed = register_module("position_embed", Embedding(o.max_positions, d, options));
  if (o.type_vocab > 0) token_type_embed = register_module("token_type_embed", Embedding(o.type_vocab, d, options));
  embed_norm = register_module("embed_norm", LayerNorm(d, o.layer.eps, policy, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers; ++i) layers->push_back(BertLayer(o.layer, policy, options));
}

torch::Tensor BertEncoderImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                       const torch::Tensor& token_type_ids) {
  check_token_ids(input_ids, options_.vocab, "input_ids");
  const int64_t tokens = input_ids.size(1);
  TORCH_CHECK_VALUE(tokens <= options_.max_positions, "input_ids: ", tokens, " tokens, more than the ",
                    options_.max_positions, " positions the encoder has");
  for (auto [name, t] : {std::pair<const char*, const torch::Tensor*>{"attention_mask", &attention_mask},
                         {"token_type_ids", &token_type_ids}}) {
    TORCH_CHECK_VALUE(!t->defined() || t->sizes() == input_ids.sizes(), name, ": expected the shape of input_ids ",
                      input_ids.sizes(), ", got ", t->sizes());
  }
  // padding_idx: the pad row gets no gradient, as in transformers' nn.Embedding(padding_idx=pad_token_id).
  auto x = torch::embedding(word_embed->weight, input_ids, options_.pad_token_id);
  x = x + position_embed->weight.narrow(0, 0, tokens).unsqueeze(0);
  if (!token_type_embed.is_empty()) {
    auto types = token_type_ids.defined() ? token_type_ids : torch::zeros_like(input_ids);
    check_token_ids(types, options_.type_vocab, "token_type_ids");
    x = x + token_type_embed(types);
  }
  x = embed_norm(x);
  auto allowed = key_padding_allowed(attention_mask);
  for (const auto& layer : *layers) x = layer->as<BertLayerImpl>()->forward(x, allowed);
  return x;
}

}  // namespace vlmzoo::nn
