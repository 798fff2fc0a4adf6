#pragma once
// The five slots a model is assembled from, as interfaces. Each kind (csrc/models/<slot>/<kind>.cpp)
// derives from one of them and registers itself (models/registry.h); the assemblies
// (models/decoder_vlm.h) hold the slots through these base pointers, registered under the slot's
// name so parameters read vision.*, abstractor.*, fusion.*, llm.*, head.*.
//
//   pixel_values [N, C, H, W] --vision--> features [N, P, Dv] --abstractor--> visual [N, V, D]
//   input_ids [B, T] + visual --fusion--> embeds [B, T', D] --llm layers (fusion hook before each)-->
//   hidden [B, T', D] --head--> logits [B, T, vocab]
#include "nn/attention.h"
#include "nn/functional.h"

#include <any>
#include <map>
#include <string>
#include <vector>

namespace vlmzoo::models {

// Base of every kind's typed config. `kind` names the registry entry that parsed it.
struct SlotConfig {
  std::string kind;
  virtual ~SlotConfig() = default;
};

// What a slot's builder learns from the rest of the model: widths are inferred, never repeated
// in the user's config.
struct BuildContext {
  nn::KernelPolicyPtr policy;
  torch::TensorOptions options;  // device (meta to count without allocating) and dtype of parameters
  int64_t input_width = 0;       // the slot's input width (vision features for the abstractor); 0 = none
  int64_t input_tokens = 0;      // tokens per image entering the slot (abstractor)
  int64_t llm_hidden = 0;        // the language model's width
  int64_t llm_vocab = 0;
  int64_t llm_layers = 0;        // the language model's layer count (fusions that act between layers)
  int64_t visual_width = 0;      // width of the visual tokens the fusion receives; 0 = no vision
  int64_t visual_tokens = 0;     // visual tokens per image the fusion receives
};

class Slot : public torch::nn::Module {
 public:
  ~Slot() override = default;
};

class VisionEncoder : public Slot {
 public:
  virtual int64_t output_width() const = 0;   // feature width per token
  virtual int64_t output_tokens() const = 0;  // feature tokens per image
  // Feature tokens of an image of this size; kinds that read any size (patch_linear) override it.
  virtual int64_t tokens_for_image(int64_t /*height*/, int64_t /*width*/) const { return output_tokens(); }
  // pixel_values: [N, channels, H, W] float -> features [N, output_tokens, output_width].
  virtual torch::Tensor forward(const torch::Tensor& pixel_values) = 0;
  // forward, also appending the tower's hidden states to `hidden_states` as transformers' vision models
  // return them (output_hidden_states: the embeddings, then each layer's output); kinds without layers
  // (patch_linear) append nothing.
  virtual torch::Tensor forward_hidden_states(const torch::Tensor& pixel_values,
                                              std::vector<torch::Tensor>& hidden_states) {
    return forward(pixel_values);
  }
  virtual double flops(int64_t images) const = 0;  // multiply-adds x 2 of one forward
};

// Text an abstractor may read (InstructBLIP's Q-Former, LLaMA-VID): one row per image; and where each
// image sits, when pixel_values came as [batch, images, (frames,) C, H, W] (OpenFlamingo's media-time and
// frame embeddings read it; the features then hold images_per_row x frames entries per row, frames innermost).
struct AbstractorText {
  torch::Tensor input_ids;       // [N, L] or undefined
  torch::Tensor attention_mask;  // [N, L] or undefined
  int64_t images_per_row = 0;    // 0: unknown (pixel_values were [images, C, H, W])
  int64_t frames = 1;            // frames per image slot
};

class Abstractor : public Slot {
 public:
  virtual int64_t output_tokens() const = 0;  // visual tokens per image handed to the LM
  // Width of the visual tokens; 0 = the LM's width (the abstractors that project into it). A perceiver
  // feeding cross-attention keeps the vision width.
  virtual int64_t output_width() const { return 0; }
  virtual bool reads_text() const { return false; }
  // features: [N, P, input_width] -> visual tokens [N, output_tokens, llm_hidden].
  virtual torch::Tensor forward(const torch::Tensor& features, const AbstractorText& text) = 0;
  virtual double flops(int64_t images) const = 0;
};

enum class MaskMode { kCausal, kBidirectional };

// Per-call state the decoder loop hands to the LM's layers and the fusion's hook.
struct DecoderContext {
  torch::Tensor positions;       // [B, T] long
  torch::Tensor attention_mask;  // [B, past + T], 1 = real token, or undefined
  torch::Tensor allowed;         // bool [B|1, 1, T, past + T]: what each query may attend to
  MaskMode mask_mode = MaskMode::kCausal;
  int64_t past = 0;                                // tokens already in the self-attention caches
  std::vector<nn::KVCache>* self_caches = nullptr;   // one per LM layer, or null
  std::vector<nn::KVCache>* cross_caches = nullptr;  // for cross-attention fusions, or null
  torch::Tensor visual;  // [N, V, D] visual tokens, for fusions that attend to them
  torch::Tensor media_mask;  // bool [B, T, images per row]: which images each token may read (cross-attention)
  // What the fusion derives from media_mask once per call (or decode step) for all its blocks; whoever
  // changes media_mask resets it.
  std::any media_state;
  std::any lm_state;     // the LM's per-call tables (rotary cos/sin), set in LanguageModel::begin
};

// Every id of input_ids in [0, vocab), or a ValueError naming llm.vocab and the ids' range (one check for
// every LM kind; skipped on meta tensors and empty ids).
void check_token_range(const torch::Tensor& input_ids, int64_t vocab);

// LanguageModel::set_vocab for kinds holding word embeddings and an LM head (null when tied): both take
// the new weights, checked against the old widths.
void replace_vocab_weights(nn::Embedding& embed, nn::Linear& head, const torch::Tensor& new_embed,
                           const torch::Tensor& new_head);

class LanguageModel : public Slot {
 public:
  virtual int64_t hidden_size() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_layers() const = 0;
  // input_ids: [B, T] -> [B, T, hidden]; ids outside the vocabulary are a ValueError.
  virtual torch::Tensor embed_tokens(const torch::Tensor& input_ids) = 0;
  // Positions of a forward without position_ids. attention_mask: [B, T] or undefined.
  virtual torch::Tensor default_positions(const torch::Tensor& attention_mask, int64_t batch, int64_t tokens,
                                          const torch::Device& device) const;
  // Positions of a prompt in generate: they follow the attention mask (left padding).
  virtual torch::Tensor prompt_positions(const torch::Tensor& attention_mask) const;
  // Before layer 0: position tables into ctx.lm_state, or learned positions added to x.
  virtual torch::Tensor begin(const torch::Tensor& x, DecoderContext& ctx) = 0;
  // x: [B, T, hidden] -> [B, T, hidden]
  virtual torch::Tensor layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) = 0;
  virtual torch::Tensor finish(const torch::Tensor& x) = 0;  // the final norm
  // The self-attention block of layer `index` alone on x [B, T, hidden] (its input, after the layer's
  // norm) with ctx's mask, positions and cache: what the view `llm.layers.N.attn` runs when called.
  virtual torch::Tensor layer_attention(int64_t index, const torch::Tensor& x, DecoderContext& ctx) {
    TORCH_CHECK_VALUE(false, "llm.layers.", index, ".attn: this llm kind cannot run its attention alone");
    return {};
  }
  virtual torch::Tensor logits(const torch::Tensor& hidden) = 0;  // [.., hidden] -> [.., vocab]
  virtual double flops(int64_t tokens) const = 0;  // one forward over a sequence of `tokens`, logits included
  // The word embeddings [vocab, hidden] (get_input_embeddings), or undefined for kinds without one.
  virtual torch::Tensor input_embeddings() const { return {}; }
  // resize_token_embeddings: the word embeddings become `embed` [n, hidden] and an untied LM head `head`
  // [n, hidden] (undefined when tied); the vocabulary is then n.
  virtual void set_vocab(const torch::Tensor& embed, const torch::Tensor& head) {
    TORCH_CHECK_VALUE(false, "resize_token_embeddings: this llm kind does not support it");
  }
  virtual bool tied_embeddings() const { return true; }
};

// A text tower pooled to one vector per text: the text side of the dual-encoder assembly
// (models/dual_encoder.h). It is a language-model kind (registered under the llm slot, so configs
// name it as "llm"), whose layers the LanguageModel methods expose; it has no LM logits.
class TextEncoder : public LanguageModel {
 public:
  virtual int64_t output_width() const = 0;  // width of the pooled vector
  // input_ids: [B, T]; attention_mask: [B, T] (1 = real token) or undefined -> pooled [B, output_width].
  virtual torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) = 0;
  torch::Tensor logits(const torch::Tensor&) override {
    TORCH_CHECK_VALUE(false, "this llm kind is a text encoder: it pools text, it has no language-model logits");
    return {};
  }
};

// One bidirectional encoder over [vision; text] with a modality expert per token (BEiT-3's multiway
// transformer): the llm slot of the multiway_encoder assembly (models/multiway_encoder.h). It owns the
// text embeddings, the layers and the final norms; the vision slot embeds the image. As a plain
// LanguageModel its layers run in text-only mode (split 0).
class MultiwayTransformer : public LanguageModel {
 public:
  // input_ids: [B, T] -> token + text position embeddings [B, T, hidden] (positions start at 2).
  virtual torch::Tensor embed_text(const torch::Tensor& input_ids) = 0;
  // x: [B, S, hidden], tokens [0, split) vision and [split, S) text; allowed: bool [B, 1, 1, S] or
  // undefined; joint: both modalities in this pass. -> hidden after the final norm [B, S, hidden].
  virtual torch::Tensor encode(const torch::Tensor& x, int64_t split, const torch::Tensor& allowed, bool joint) = 0;
  torch::Tensor logits(const torch::Tensor&) override {
    TORCH_CHECK_VALUE(false, "this llm kind is a multiway encoder: it has no language-model logits");
    return {};
  }
};

// How visual tokens meet the text.
struct FusedInputs {
  torch::Tensor embeds;          // [B, T', hidden]
  torch::Tensor attention_mask;  // [B, T'] or undefined
  torch::Tensor position_ids;    // [B, T'] or undefined (then the LM's defaults)
  int64_t prefix = 0;            // tokens placed before input_ids; logits start after them
};

class Fusion : public Slot {
 public:
  // input_ids: [B, T]; text_embeds: [B, T, hidden] their word embeddings (or the caller's inputs_embeds);
  // attention_mask: [B, T] or undefined; position_ids: [B, T] or undefined; visual: [N, V, hidden] or undefined.
  virtual FusedInputs fuse(const torch::Tensor& input_ids, const torch::Tensor& text_embeds,
                           const torch::Tensor& attention_mask, const torch::Tensor& position_ids,
                           const torch::Tensor& visual, LanguageModel& lm) = 0;
  // The placeholder token the visual tokens are tied to (-1: none): with inputs_embeds, its embedding marks them.
  virtual int64_t image_token_id() const { return -1; }
  // Which images each token may read, for fusions that attend to the visual tokens: bool
  // [B, T, images per row] from the caller's image_attention_mask [B, T, images] or, without one, from
  // the image tokens of input_ids. visual: [N, V, D] or undefined. Undefined for the other fusions.
  virtual torch::Tensor media_mask(const torch::Tensor& input_ids, const torch::Tensor& image_attention_mask,
                                   const torch::Tensor& visual) const {
    TORCH_CHECK_VALUE(!image_attention_mask.defined(),
                      "image_attention_mask: this model's fusion does not read it (it is for fusion kind \"cross_attention\")");
    return {};
  }
  // Runs before LM layer `index`; gated cross-attention or routing act here.
  virtual torch::Tensor before_layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) { return x; }
  // Tokens the LM runs over for `text_tokens` of text and `visual_tokens` visual tokens in all.
  virtual int64_t sequence_tokens(int64_t text_tokens, int64_t visual_tokens) const { return text_tokens + visual_tokens; }
  virtual double flops(int64_t tokens, int64_t images) const { return 0; }
};

class Head : public Slot {
 public:
  // hidden: [B, T, hidden] -> [B, T, out]
  virtual torch::Tensor forward(const torch::Tensor& hidden, LanguageModel& lm) = 0;
  // The same, never through a Python override (what the view `head` runs when called alone).
  virtual torch::Tensor forward_own(const torch::Tensor& hidden, LanguageModel& lm) { return forward(hidden, lm); }
};

// Scores image-text pairs from pooled vectors (the dual-encoder assembly's head): projections into a
// shared space, L2 normalisation, a learned temperature (and bias).
class SimilarityHead : public Head {
 public:
  torch::Tensor forward(const torch::Tensor&, LanguageModel&) override {
    TORCH_CHECK_VALUE(false, "this head kind scores image-text pairs; it runs in the dual_encoder assembly");
    return {};
  }
  virtual int64_t embed_dim() const = 0;
  // pooled: [N, vision width] / [B, text width] -> projections [N|B, embed_dim], not normalised
  // (transformers' get_image_features / get_text_features).
  virtual torch::Tensor project_images(const torch::Tensor& pooled) = 0;
  virtual torch::Tensor project_texts(const torch::Tensor& pooled) = 0;
  // The same, L2-normalised: the embeddings the logits compare.
  torch::Tensor embed_images(const torch::Tensor& pooled) { return unit_norm(project_images(pooled)); }
  torch::Tensor embed_texts(const torch::Tensor& pooled) { return unit_norm(project_texts(pooled)); }
  static torch::Tensor unit_norm(const torch::Tensor& x) { return x / x.norm(2, -1, true); }
  // text_embeds [B, E], image_embeds [N, E] -> logits_per_text [B, N].
  virtual torch::Tensor logits_per_text(const torch::Tensor& text_embeds, const torch::Tensor& image_embeds) = 0;
  // The temperature (and bias) start at the reference's constants, not at a random draw.
  virtual void initialize_constants() = 0;
  virtual double flops(int64_t texts, int64_t images) const = 0;
};

// Which modalities a multiway-encoder pass holds.
enum class EncoderMode { kVision, kText, kVisionLanguage };

// A head of the multiway_encoder assembly (BEiT-3's retrieval, VQA and image-classification heads):
// named outputs from a pass's final hidden states.
class EncoderHead : public Head {
 public:
  torch::Tensor forward(const torch::Tensor&, LanguageModel&) override {
    TORCH_CHECK_VALUE(false, "this head kind reads a multiway encoder; it runs in the multiway_encoder assembly");
    return {};
  }
  // hidden: [B, S, hidden] of one pass in `mode` -> the outputs that pass gives (none when the head
  // needs another mode), e.g. {"logits": [B, classes]}.
  virtual std::map<std::string, torch::Tensor> outputs(const torch::Tensor& hidden, EncoderMode mode) = 0;
  // Retrieval encodes each modality alone, even when both are given; the others read one pass.
  virtual bool separate_passes() const { return false; }
  // After separate passes: outputs that need both (logits_per_text), from the merged outputs.
  virtual void pair(std::map<std::string, torch::Tensor>& outputs) {}
  // Constants that start at the reference's values (a temperature), not at a random draw.
  virtual void initialize_constants() {}
  virtual double flops(int64_t batch) const = 0;  // one forward of `batch` examples
};

}  // namespace vlmzoo::models
