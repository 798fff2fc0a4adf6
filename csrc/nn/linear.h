#pragma once
// Parameter-holding primitives that allocate without initialising: a model that is about to load a
// checkpoint (or is built on the meta device to be counted) never pays for random draws. Weights
// are drawn later, once, by models::initialize_weights when a model is trained from scratch.
#include <torch/torch.h>

namespace vlmzoo::nn {

// y = x W^T + b. weight: [out, in]; bias: [out] or undefined.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  torch::Tensor weight, bias;
};
TORCH_MODULE(Linear);

// weight: [count, dim]; forward: ids [...] -> [..., dim].
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t count, int64_t dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// Non-overlapping patches: a convolution with kernel = stride = patch. weight: [out, channels, p, p].
class PatchConvImpl : public torch::nn::Module {
 public:
  PatchConvImpl(int64_t channels, int64_t out, int64_t patch, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& pixels);  // [N, C, H, W] -> [N, out, H/p, W/p]

  torch::Tensor weight, bias;

 private:
  int64_t patch_;
};
TORCH_MODULE(PatchConv);

}  // namespace vlmzoo::nn
