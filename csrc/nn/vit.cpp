#include "nn/vit.h"

#include <algorithm>

namespace vlmzoo::nn {

VitLayerImpl::VitLayerImpl(const config::VisionConfig& c, KernelPolicyPtr policy) {
  norm1 = register_module("norm1", LayerNorm(c.hidden, c.eps, policy));
  attn = register_module(
      "attn", Attention(AttentionOptions{c.hidden, c.hidden, c.heads, c.heads, c.hidden / c.heads, true}, policy));
  norm2 = register_module("norm2", LayerNorm(c.hidden, c.eps, policy));
  mlp = register_module("mlp", Mlp(c.hidden, c.mlp, c.hidden, c.act, true, policy));
}

torch::Tensor VitLayerImpl::forward(const torch::Tensor& x) {
  auto h = x + attn(norm1(x), torch::Tensor());
  return h + mlp(norm2(h));
}

VisionTransformerImpl::VisionTransformerImpl(const config::VisionConfig& c, KernelPolicyPtr policy) : config_(c) {
  patch_embed = register_module(
      "patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.channels, c.hidden, c.patch_size)
                                           .stride(c.patch_size)
                                           .bias(c.patch_bias)));
  if (c.class_token) class_embed = register_parameter("class_embed", torch::randn({c.hidden}) * 0.02);
  position_embed = register_module("position_embed", torch::nn::Embedding(c.tokens_per_image(), c.hidden));
  if (c.pre_norm) pre_norm = register_module("pre_norm", LayerNorm(c.hidden, c.eps, policy));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.layers; ++i) layers->push_back(VitLayer(c, policy));
  if (c.post_norm) post_norm = register_module("post_norm", LayerNorm(c.hidden, c.eps, policy));
}

torch::Tensor VisionTransformerImpl::embed(const torch::Tensor& pixel_values) {
  const auto& c = config_;
  TORCH_CHECK_VALUE(pixel_values.dim() == 4 && pixel_values.size(1) == c.channels &&
                        pixel_values.size(2) == c.image_size && pixel_values.size(3) == c.image_size,
                    "pixel_values: expected [num_images, ", c.channels, ", ", c.image_size, ", ", c.image_size,
                    "] (vision.channels, vision.image_size), got ", pixel_values.sizes());
  auto dtype = patch_embed->weight.scalar_type();
  auto patches = patch_embed(pixel_values.to(dtype)).flatten(2).transpose(1, 2);  // [N, P, D]
  if (c.class_token) {
    auto cls = class_embed.to(dtype).expand({patches.size(0), 1, c.hidden});
    patches = torch::cat({cls, patches}, 1);
  }
  auto x = patches + position_embed->weight.unsqueeze(0);
  return c.pre_norm ? pre_norm(x) : x;
}

std::vector<torch::Tensor> VisionTransformerImpl::hidden_states(const torch::Tensor& pixel_values,
                                                                const std::vector<int>& indices) {
  int deepest = *std::max_element(indices.begin(), indices.end());
  std::vector<torch::Tensor> states = {embed(pixel_values)};
  for (int i = 0; i < deepest; ++i) states.push_back(layers->ptr<VitLayerImpl>(i)->forward(states.back()));
  std::vector<torch::Tensor> out;
  for (int index : indices) out.push_back(states[index]);
  return out;
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& pixel_values) {
  auto selected = hidden_states(pixel_values, config_.resolved_feature_layers());
  if (config_.select == "default") {
    for (auto& s : selected) s = s.narrow(1, 1, s.size(1) - 1);
  }
  return selected.size() == 1 ? selected[0] : torch::cat(selected, -1);
}

}  // namespace vlmzoo::nn
