#pragma once
// Feed-forward blocks: plain two-layer MLP (CLIP, SigLIP, BLIP-2's ViT, OPT) and gated SwiGLU (Llama).
#include "nn/functional.h"
#include "nn/linear.h"
#include "nn/overridable.h"

namespace vlmzoo::nn {

class MlpImpl : public torch::nn::Module, public Overridable {
 public:
  MlpImpl(int64_t in, int64_t hidden, int64_t out, std::string act, bool bias, KernelPolicyPtr policy,
          const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  torch::Tensor forward_own(const torch::Tensor& x);  // never overridden
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0)); }

  Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string act_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(Mlp);

class GatedMlpImpl : public torch::nn::Module, public Overridable {
 public:
  GatedMlpImpl(int64_t hidden, int64_t intermediate, std::string act, bool bias, KernelPolicyPtr policy,
               const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);  // [..., hidden] -> [..., hidden]
  torch::Tensor forward_own(const torch::Tensor& x);  // never overridden
  torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) override { return forward_own(inputs.at(0)); }

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  std::string act_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(GatedMlp);

}  // namespace vlmzoo::nn
