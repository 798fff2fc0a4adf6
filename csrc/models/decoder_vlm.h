#pragma once
// The decoder assembly: vision -> abstractor -> fusion -> LM layers (the fusion's hook before each)
// -> head. LLaVA, BLIP-2/InstructBLIP, Flamingo-style and Fuyu-style models are this class with
// other kinds in the slots. The only assembly that generates.
#include "models/model_config.h"

#include <functional>
#include <map>

namespace vlmzoo::models {

// transformers' names: the call takes what the family's processor returns.
struct VlmInputs {
  torch::Tensor input_ids;       // [B, T] long
  torch::Tensor pixel_values;    // [N, C, H, W] or undefined
  torch::Tensor attention_mask;  // [B, T] or undefined (all ones)
  torch::Tensor position_ids;    // [B, T] or undefined (the LM's defaults)
  AbstractorText abstractor_text;  // qformer_input_ids / qformer_attention_mask: [N, L]
  torch::Tensor image_attention_mask;  // [B, T, images per row] (IDEFICS) or undefined
  // [B, T, llm hidden] in place of input_ids' word embeddings (then input_ids is undefined); the image
  // placeholders are the rows equal to the image token's embedding, as transformers finds them.
  torch::Tensor inputs_embeds;
};

// What forward_outputs collects besides the logits (transformers' output_hidden_states, output_attentions).
struct OutputRequest {
  bool hidden_states = false;
  bool attentions = false;
};

// transformers' output fields. Vectors stay empty unless requested.
struct VlmOutputs {
  torch::Tensor logits;  // [B, T, vocab]
  // LM: the input of layer 0, each layer's output, the last one after the final norm (and OPT's
  // project_out), as transformers' capture_outputs returns them: layers + 1 of [B, T', hidden].
  std::vector<torch::Tensor> hidden_states;
  std::vector<torch::Tensor> attentions;  // LM self-attention probabilities per layer, [B, heads, T', T']
  // The vision tower's: its embeddings, then each layer's output (none for towers without layers).
  std::vector<torch::Tensor> vision_hidden_states;
  torch::Tensor visual;  // [N, V, hidden] visual tokens as the LM receives them (image_hidden_states)
};

struct GenerateOptions {
  int64_t max_new_tokens = 20;
  int64_t min_new_tokens = 0;  // eos is masked out before this many new tokens
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;   // 0 = off
  double top_p = 1.0;  // 1 = off
  double repetition_penalty = 1.0;  // transformers' CTRL-style penalty on tokens already in the row
  int64_t no_repeat_ngram_size = 0;  // 0 = off; else no n-gram (prompt included) occurs twice in a row
  std::vector<int64_t> eos_token_ids;  // empty = never stop early
  int64_t pad_token_id = 0;            // written after a row has finished
  int64_t seed = 0;
  // Streaming (transformers' BaseStreamer.put): called with the prompt [B, T] first, then with each
  // step's new tokens [B], all on the CPU. An exception it throws ends generate and propagates.
  std::function<void(const torch::Tensor&)> on_tokens;
};

// Blocks hooked or replaced from Python (vlmzoo/models/blocks.py) run through these in place of the C++
// block, in forward and in generate. All unset (the usual case), the forward pays one test per block.
struct BlockOverrides {
  std::function<torch::Tensor(const torch::Tensor&)> vision;  // pixel_values -> features
  std::function<torch::Tensor(const torch::Tensor&, const AbstractorText&)> abstractor;  // features -> visual
  // Empty, or one per LM layer (unset entries run the C++ layer): (index, hidden, context) -> hidden.
  std::vector<std::function<torch::Tensor(int64_t, const torch::Tensor&, DecoderContext&)>> layers;
  // A block inside the vision tower runs Python (a hooked or replaced Linear): its parameters are not the
  // tower's, so a tower whose own parameters are frozen still records a graph.
  bool python_in_vision = false;
};

class DecoderVlmImpl : public torch::nn::Module {
 public:
  // options: device and dtype of the parameters (meta builds the shapes only, for counting).
  // initialize: draw transformers-style initial weights; false leaves them uninitialised for a load.
  DecoderVlmImpl(ModelConfig config, const torch::TensorOptions& options = {}, bool initialize = true);

  // pixel_values: [N, C, H, W], or [B, I, C, H, W] / [B, I, frames, C, H, W] (N = B x I) -> visual tokens
  // [N, visual_tokens_per_image, llm hidden].
  // vision_hidden_states: when given, the tower's hidden states are appended to it.
  torch::Tensor encode_images(const torch::Tensor& pixel_values, const AbstractorText& text = {},
                              std::vector<torch::Tensor>* vision_hidden_states = nullptr);
  // Logits [B, T, vocab] over every position of input_ids.
  torch::Tensor forward(const VlmInputs& inputs);
  // The logits and what `request` asks for.
  VlmOutputs forward_outputs(const VlmInputs& inputs, const OutputRequest& request);
  // Gradient checkpointing: in training with grad enabled, each LM layer (and a vision tower that trains,
  // as one block) runs without keeping its activations and runs again in backward
  // (transformers' gradient_checkpointing_enable).
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }
  // resize_token_embeddings: the LM's word embeddings become `embed` [n, hidden] and its untied head
  // `head` [n, hidden] (undefined when tied); config().llm's vocab becomes n.
  void set_vocab(const torch::Tensor& embed, const torch::Tensor& head);
  // [B, T + new]: the prompt, then the new tokens; rows that finished are padded with pad_token_id.
  torch::Tensor generate(const VlmInputs& inputs, const GenerateOptions& options);

  // Training-from-scratch initialisation, as transformers' _init_weights: norms 1 and 0, biases 0,
  // every other weight N(0, std). seed < 0 draws from torch's global generator.
  void initialize_weights(double std = 0.02, int64_t seed = -1);

  const ModelConfig& config() const { return config_; }
  int64_t visual_tokens_per_image() const { return abstractor ? abstractor->output_tokens() : 0; }
  // Visual tokens of an image of height x width: the vision kind's count when the abstractor keeps one
  // token per feature (identity, linear, mlp), else the abstractor's fixed count.
  int64_t visual_tokens_for_image(int64_t height, int64_t width) const {
    if (!vision) return 0;
    const int64_t tokens = abstractor->output_tokens();
    return tokens == vision->output_tokens() ? vision->tokens_for_image(height, width) : tokens;
  }
  // Multiply-adds x 2 of one forward, per slot: `images` images and `text_tokens` text tokens.
  std::map<std::string, double> forward_flops(int64_t text_tokens, int64_t images) const;
  void set_fused(bool fused) { policy_->fused = fused; }
  bool fused() const { return policy_->fused; }

  std::shared_ptr<VisionEncoder> vision;  // null for vision kind "none"
  std::shared_ptr<Abstractor> abstractor;  // null when there is no vision encoder
  std::shared_ptr<Fusion> fusion;
  std::shared_ptr<LanguageModel> llm;
  std::shared_ptr<Head> head;
  BlockOverrides overrides;

  // One block at a time (models/decoder_blocks.cpp), what the Python views call; never overridden.
  // pixel_values [N, C, H, W] -> features [N, P, Dv]
  torch::Tensor run_vision(const torch::Tensor& pixel_values);
  // features [N, P, Dv] -> visual tokens [N, V, D]
  torch::Tensor run_abstractor(const torch::Tensor& features, const AbstractorText& text);
  // The context a decoder layer reads, for hidden [B, T, hidden] run outside a forward: a causal mask
  // over attention_mask [B, T] (or none), positions [B, T] (or the LM's defaults), the LM's tables.
  DecoderContext layer_context(const torch::Tensor& hidden, const torch::Tensor& attention_mask,
                               const torch::Tensor& position_ids);
  // LM layer `index` on hidden [B, T, hidden] -> [B, T, hidden].
  torch::Tensor run_layer(int64_t index, const torch::Tensor& hidden, DecoderContext& ctx);
  // The self-attention of LM layer `index` on normed hidden [B, T, hidden] -> [B, T, hidden].
  torch::Tensor run_layer_attention(int64_t index, const torch::Tensor& hidden, DecoderContext& ctx);
  // The head on the LM's final hidden [B, T, hidden] (after the final norm) -> logits [B, T, vocab].
  torch::Tensor run_head(const torch::Tensor& hidden);

 private:
  // out: when given, the hidden states and attentions `request` asks for are appended to it.
  torch::Tensor run_layers(torch::Tensor x, DecoderContext& ctx, VlmOutputs* out = nullptr,
                           const OutputRequest& request = {});
  // Layer `index` inside a forward: a Python override when one is installed, else the C++ layer
  // (recomputed in backward under gradient checkpointing).
  torch::Tensor forward_layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx);
  bool checkpointing() const {
    return gradient_checkpointing_ && is_training() && torch::GradMode::is_enabled();
  }
  torch::Tensor placeholder_ids(const torch::Tensor& inputs_embeds);
  void check_inputs(const VlmInputs& inputs) const;

  ModelConfig config_;
  nn::KernelPolicyPtr policy_;
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(DecoderVlm);

// Builds any config: first on the meta device, to refuse (naming the size) a model larger than this
// machine's memory before allocating anything.
DecoderVlm build_model(const ModelConfig& config, const torch::TensorOptions& options, bool initialize);

}  // namespace vlmzoo::models
