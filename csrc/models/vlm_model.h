#pragma once
// A vision-language model assembled from the four slots of a config: vision -> abstractor ->
// fusion -> llm. The only place that knows the slots exist.
#include "config/model_config.h"
#include "nn/llama.h"
#include "nn/projector.h"
#include "nn/vit.h"

#include <optional>

namespace vlmzoo::models {

struct GenerateOptions {
  int64_t max_new_tokens = 20;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;      // 0 = off
  double top_p = 1.0;     // 1 = off
  std::vector<int64_t> eos_token_ids;  // empty = never stop early
  int64_t pad_token_id = 0;            // written after a row has finished
  int64_t seed = 0;
};

class VlmModelImpl : public torch::nn::Module {
 public:
  explicit VlmModelImpl(config::ModelConfig config);

  // pixel_values: [num_images, C, H, W] -> visual tokens [num_images, tokens, llm.hidden].
  torch::Tensor encode_images(const torch::Tensor& pixel_values);
  // Word embeddings with the visual tokens spliced in at the image placeholder positions.
  torch::Tensor input_embeddings(const torch::Tensor& input_ids, const torch::Tensor& pixel_values);
  // input_ids: [B, T]; attention_mask: [B, T] or undefined; position_ids: [B, T] or undefined
  // (then 0..T-1, as transformers' forward). Returns logits [B, T, vocab].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                        const torch::Tensor& attention_mask, const torch::Tensor& position_ids);
  // Returns [B, T + new] (prompt then new tokens), rows that finished padded with pad_token_id.
  torch::Tensor generate(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                         const torch::Tensor& attention_mask, const GenerateOptions& options);

  // Training-from-scratch initialisation, as transformers' _init_weights: norms 1 and 0, biases 0,
  // every other weight N(0, std). libtorch's defaults (N(0, 1) embeddings) drown the image.
  // seed < 0 draws from torch's global generator.
  void initialize_weights(double std = 0.02, int64_t seed = -1);

  const config::ModelConfig& config() const { return config_; }
  void set_fused(bool fused) { policy_->fused = fused; }
  bool fused() const { return policy_->fused; }

  nn::VisionTransformer vision{nullptr};
  nn::Projector abstractor{nullptr};
  nn::LlamaModel llm{nullptr};

 private:
  config::ModelConfig config_;
  nn::KernelPolicyPtr policy_;
};
TORCH_MODULE(VlmModel);

}  // namespace vlmzoo::models
