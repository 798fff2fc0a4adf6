#pragma once
// RMSNorm (Llama) and LayerNorm (CLIP, SigLIP) as modules over the shared primitives.
#include "nn/functional.h"

namespace vlmzoo::nn {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);
  // Returns (x + residual, norm(x + residual)) in one pass when fused.
  std::pair<torch::Tensor, torch::Tensor> forward_residual(const torch::Tensor& x, const torch::Tensor& residual);

  torch::Tensor weight;

 private:
  double eps_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(RMSNorm);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight, bias;

 private:
  double eps_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(LayerNorm);

}  // namespace vlmzoo::nn
