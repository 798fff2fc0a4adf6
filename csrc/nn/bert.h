#pragma once
// BERT's post-LN encoder layer (transformers' BertLayer) and a BERT encoder over it (BertModel without
// the pooler), plus the BLIP-2 Q-Former variant of the layer: the first `queries` rows (learned query
// tokens) have their own FFN and are the only rows that cross-attend; the other rows (text) use the
// plain FFN. Every sub-block is post-LN: y = LayerNorm(block(x) + x).
//
// Names (what transformers calls them): attn.{q,k,v,o}_proj = attention.self.{query,key,value} and
// attention.output.dense; attn_norm = attention.output.LayerNorm; cross_attn / cross_norm the same for
// crossattention; ffn.fc1 / ffn.fc2 / ffn_norm = intermediate.dense / output.dense / output.LayerNorm;
// query_ffn* = intermediate_query / output_query.
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

struct BertLayerOptions {
  int64_t hidden = 768, heads = 12, mlp = 3072;
  std::string act = "gelu";
  double eps = 1e-12;
  int64_t cross_width = 0;  // width of the states cross-attended to; 0 = no cross-attention
  bool text_ffn = true;     // the plain FFN (BERT; the Q-Former's text rows)
  bool query_ffn = false;   // the query rows' FFN (Q-Former)
};

class BertLayerImpl : public torch::nn::Module {
 public:
  BertLayerImpl(const BertLayerOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);

  // x: [B, T, hidden]; allowed: bool [B|1, 1, T, T] or undefined (self-attention);
  // queries: the first `queries` rows take the query FFN and cross-attention (0 = plain BERT: every row
  // takes the text FFN, and cross-attention when the layer has one);
  // context: [B, S, cross_width] (needed by a layer with cross-attention); context_allowed: bool
  // [B|1, 1, rows, S] or undefined. Returns [B, T, hidden].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed, int64_t queries = 0,
                        const torch::Tensor& context = {}, const torch::Tensor& context_allowed = {});

  bool has_cross_attention() const { return !cross_attn.is_empty(); }

  Attention attn{nullptr}, cross_attn{nullptr};
  LayerNorm attn_norm{nullptr}, cross_norm{nullptr}, ffn_norm{nullptr}, query_ffn_norm{nullptr};
  Mlp ffn{nullptr}, query_ffn{nullptr};

 private:
  torch::Tensor cross(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& context_allowed);
  BertLayerOptions options_;
};
TORCH_MODULE(BertLayer);

// Bool [B, 1, 1, S] from a key padding mask [B, S] (nonzero = real token): every row may attend to
// every real key. Undefined in, undefined out.
torch::Tensor key_padding_allowed(const torch::Tensor& attention_mask);

struct BertEncoderOptions {
  int64_t vocab = 30522, max_positions = 512, type_vocab = 2, pad_token_id = 0;
  BertLayerOptions layer;
  int64_t layers = 12;
};

// transformers' BertModel up to last_hidden_state: (word + absolute position + token type embeddings)
// -> LayerNorm -> layers. Parameters: word_embed, position_embed, token_type_embed, embed_norm, layers.i.
class BertEncoderImpl : public torch::nn::Module {
 public:
  BertEncoderImpl(const BertEncoderOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);

  // input_ids: [B, T] long; attention_mask, token_type_ids: [B, T] or undefined (all ones, all zeros).
  // Returns the last hidden state [B, T, hidden].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const torch::Tensor& token_type_ids = {});

  Embedding word_embed{nullptr}, position_embed{nullptr}, token_type_embed{nullptr};
  LayerNorm embed_norm{nullptr};
  torch::nn::ModuleList layers;

 private:
  BertEncoderOptions options_;
};
TORCH_MODULE(BertEncoder);

// Checks token ids before an embedding table reads them: integer, [B, T], inside [0, vocab).
// `what` names the input ("qformer_input_ids").
void check_token_ids(const torch::Tensor& ids, int64_t vocab, const std::string& what);

}  // namespace vlmzoo::nn
