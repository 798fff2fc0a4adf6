#pragma once
// The multiway-encoder assembly (BEiT-3): one bidirectional encoder over [vision; text] whose layers
// route each token to its modality's expert (llm slot, a MultiwayTransformer kind), the image
// embedded by the vision slot (beit3_patch) and a head (head slot, an EncoderHead kind). No
// abstractor, no fusion: the modalities meet in every layer's joint attention.
//   pixel_values [N, C, H, W] --vision--> [N, V, D]; input_ids [N, T] --llm.embed_text--> [N, T, D]
//   [vision; text] (text padding zeroed, masked as keys) --llm.encode--> last_hidden_state [N, V + T, D]
//   --head--> logits [N, classes] (vqa, image_classification) or image_embeds, text_embeds,
//   logits_per_text (retrieval: each modality encoded alone)
// Modes as torchscale's BEiT3: vision only (no input_ids), text only (no pixel_values), vision-language.
#include "models/model_config.h"

#include <map>

namespace vlmzoo::models {

struct MultiwayOutputs {
  torch::Tensor last_hidden_state;  // [N, V + T, D]; undefined after retrieval's separate passes
  std::map<std::string, torch::Tensor> head;  // the head's named outputs
};

class MultiwayEncoderImpl : public torch::nn::Module {
 public:
  MultiwayEncoderImpl(ModelConfig config, const torch::TensorOptions& options = {}, bool initialize = true);

  // input_ids [N, T] or undefined; pixel_values [N, C, H, W] or undefined; attention_mask [N, T]
  // (1 = real token) or undefined.
  // (Not named forward: torch's bind_module would bind it as is.)
  MultiwayOutputs run(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                          const torch::Tensor& attention_mask);
  // One pass (no head): hidden after the final norm [N, V + T, D].
  torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                       const torch::Tensor& attention_mask);

  // transformers-style: norms 1/0, biases 0, other weights N(0, std); head constants at their values.
  void initialize_weights(double std = 0.02, int64_t seed = -1);

  const ModelConfig& config() const { return config_; }
  int64_t visual_tokens_per_image() const { return vision->output_tokens(); }
  // Multiply-adds x 2 of one vision-language forward over `images` examples of `text_tokens` tokens.
  std::map<std::string, double> forward_flops(int64_t text_tokens, int64_t images) const;
  void set_fused(bool fused) { policy_->fused = fused; }
  bool fused() const { return policy_->fused; }

  std::shared_ptr<VisionEncoder> vision;
  std::shared_ptr<MultiwayTransformer> llm;
  std::shared_ptr<EncoderHead> head;

 private:
  ModelConfig config_;
  nn::KernelPolicyPtr policy_;
};
TORCH_MODULE(MultiwayEncoder);

}  // namespace vlmzoo::models
