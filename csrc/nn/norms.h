#pragma once
// RMSNorm (Llama) and LayerNorm (CLIP, SigLIP) as modules over the shared primitives.
#include "nn/functional.h"
#include "nn/overridable.h"

namespace vlmzoo::nn {

class RMSNormImpl : public torch::nn::Module, public Overridable {
 public:
  RMSNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward_own(const torch::Tensor& x);  // the norm itself, never overridden
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0)); }
  // Returns (x + residual, norm(x + residual)) in one pass when fused (two steps when overridden).
  std::pair<torch::Tensor, torch::Tensor> forward_residual(const torch::Tensor& x, const torch::Tensor& residual);

  torch::Tensor weight;

 private:
  double eps_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(RMSNorm);

class LayerNormImpl : public torch::nn::Module, public Overridable {
 public:
  LayerNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor forward_own(const torch::Tensor& x);  // the norm itself, never overridden
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0)); }

  torch::Tensor weight, bias;

 private:
  double eps_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(LayerNorm);

}  // namespace vlmzoo::nn
