#pragma once
// LLaVA-style abstractors: a linear map or an MLP from vision features to the LM width.
#include "config/model_config.h"
#include "nn/functional.h"

namespace vlmzoo::nn {

class ProjectorImpl : public torch::nn::Module {
 public:
  // depth linears: in -> out, then out -> out; `act` between them.
  ProjectorImpl(int64_t in, int64_t out, const config::AbstractorConfig& c, KernelPolicyPtr policy);
  torch::Tensor forward(const torch::Tensor& features);  // [N, tokens, in] -> [N, tokens, out]

  torch::nn::ModuleList layers;

 private:
  std::string act_;
  KernelPolicyPtr policy_;
};
TORCH_MODULE(Projector);

}  // namespace vlmzoo::nn
