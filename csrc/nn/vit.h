#pragma once
// Vision transformer encoder: CLIP style (conv patches, class token, pre-LN) and SigLIP style
// (no class token, gelu_tanh, post-LN). Returns the hidden states that the config selects.
#include "config/model_config.h"
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

class VitLayerImpl : public torch::nn::Module {
 public:
  VitLayerImpl(const config::VisionConfig& c, KernelPolicyPtr policy);
  torch::Tensor forward(const torch::Tensor& x);  // x: [N, tokens, hidden]

  LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(VitLayer);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  VisionTransformerImpl(const config::VisionConfig& c, KernelPolicyPtr policy);

  // pixel_values: [N, channels, image_size, image_size] -> [N, feature_tokens, feature_dim]:
  // the configured feature layers, class token kept or dropped, concatenated on channels.
  torch::Tensor forward(const torch::Tensor& pixel_values);

  // Hidden state `index` (0 = embeddings, i = after layer i) for each requested index, in order.
  // Runs only as many layers as the deepest index needs.
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixel_values, const std::vector<int>& indices);

  torch::nn::Conv2d patch_embed{nullptr};
  torch::Tensor class_embed;
  torch::nn::Embedding position_embed{nullptr};
  LayerNorm pre_norm{nullptr}, post_norm{nullptr};
  torch::nn::ModuleList layers;

 private:
  torch::Tensor embed(const torch::Tensor& pixel_values);
  config::VisionConfig config_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace vlmzoo::nn
