#pragma once
// The linear stack LLaVA's projectors are made of: `depth` linears (in -> out, then out -> out)
// with an activation between them, registered as `layers.i` on the owning abstractor.
#include "nn/functional.h"
#include "nn/linear.h"

namespace vlmzoo::models {

inline torch::nn::ModuleList projector_layers(int64_t in, int64_t out, int depth, bool bias,
                                              const torch::TensorOptions& options) {
  torch::nn::ModuleList layers;
  for (int i = 0; i < depth; ++i) layers->push_back(nn::Linear(i == 0 ? in : out, out, bias, options));
  return layers;
}

// x: [N, tokens, in] -> [N, tokens, out]
inline torch::Tensor run_projector(const torch::nn::ModuleList& layers, torch::Tensor x, const std::string& act,
                                   bool fused) {
  for (size_t i = 0; i < layers->size(); ++i) {
    if (i > 0) x = nn::activation(x, act, fused);
    x = layers->ptr<nn::LinearImpl>(i)->forward(x);
  }
  return x;
}

inline int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace vlmzoo::models
