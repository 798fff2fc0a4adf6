#pragma once
// The dual-encoder assembly (CLIP, SigLIP): an image tower (vision slot, pooled), a text tower (llm
// slot, a TextEncoder kind) and a head that scores every image against every text (head slot, a
// SimilarityHead kind). No abstractor, no fusion: the two towers meet only in the head.
//   pixel_values [N, C, H, W] --vision--> [N, 1, Dv] --head--> image_embeds [N, E]
//   input_ids [B, T] --llm (encode)--> [B, Dt] --head--> text_embeds [B, E]
//   logits_per_text [B, N], logits_per_image [N, B] (transformers' CLIPModel / SiglipModel outputs)
#include "models/model_config.h"

#include <map>

namespace vlmzoo::models {

struct DualOutputs {
  torch::Tensor logits_per_image;  // [N, B]
  torch::Tensor logits_per_text;   // [B, N]
  torch::Tensor image_embeds;      // [N, E], unit norm
  torch::Tensor text_embeds;       // [B, E], unit norm
};

class DualEncoderImpl : public torch::nn::Module {
 public:
  // options: device (meta to count) and dtype; initialize: draw initial weights (false before a load).
  DualEncoderImpl(ModelConfig config, const torch::TensorOptions& options = {}, bool initialize = true);

  // pixel_values [N, C, H, W] -> image_embeds [N, E]: unit-norm, or the bare projections (normalize false)
  torch::Tensor encode_images(const torch::Tensor& pixel_values, bool normalize = true);
  // input_ids [B, T], attention_mask [B, T] or undefined -> text_embeds [B, E] (normalize as above)
  torch::Tensor encode_texts(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, bool normalize = true);
  // Every image against every text. (Not named forward: torch's bind_module would bind it as is.)
  DualOutputs score(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                      const torch::Tensor& attention_mask);

  // transformers-style: norms 1/0, biases 0, other weights N(0, std); the temperature (and bias)
  // at the head's configured constants.
  void initialize_weights(double std = 0.02, int64_t seed = -1);

  const ModelConfig& config() const { return config_; }
  int64_t embed_dim() const { return head->embed_dim(); }
  // Multiply-adds x 2 of one forward over `images` images and `texts` texts of `text_tokens` tokens.
  std::map<std::string, double> forward_flops(int64_t text_tokens, int64_t images, int64_t texts = 1) const;
  void set_fused(bool fused) { policy_->fused = fused; }
  bool fused() const { return policy_->fused; }

  std::shared_ptr<VisionEncoder> vision;
  std::shared_ptr<TextEncoder> llm;
  std::shared_ptr<SimilarityHead> head;

 private:
  ModelConfig config_;
  nn::KernelPolicyPtr policy_;
};
TORCH_MODULE(DualEncoder);

}  // namespace vlmzoo::models
