#pragma once
// The pre-LN transformer layer of CLIP and SigLIP (vision and text towers), and the pixel checks every vision encoder
// runs. The encoders themselves (embeddings, layer loop, feature selection) are vision kinds.
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

struct VitOptions {
  int64_t hidden, heads, mlp;
  std::string act;
  double eps;

};

class VitLayerImpl : public torch::nn::Module, public Overridable {
 public:
  VitLayerImpl(const VitOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options);
  // x: [N, tokens, hidden]; allowed: bool [N|1, 1, tokens, tokens] or undefined (text towers mask padding).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& allowed = {});
  torch::Tensor forward_own(const torch::Tensor& x, const torch::Tensor& allowed);  // never overridden
  // Alone: unmasked (a vision tower's layer); inside a forward its view runs with the forward's mask.
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0), {}); }

  LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(VitLayer);


// Checks pixel_values before a vision encoder reads them: float, finite, [N, channels, size, size].
// `what` names the config fields the sizes come from.
void check_pixel_values(const torch::Tensor& pixel_values, int64_t channels, int64_t height, int64_t width,
                        const std::string& what);
// The dtype and finiteness half of check_pixel_values, for vision kinds that read any image size.
void check_pixel_dtype_and_values(const torch::Tensor& pixel_values);

}  // namespace vlmzoo::nn
