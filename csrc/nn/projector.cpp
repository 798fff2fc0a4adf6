#include "nn/projector.h"

namespace vlmzoo::nn {

ProjectorImpl::ProjectorImpl(int64_t in, int64_t out, const config::AbstractorConfig& c, KernelPolicyPtr policy)
    : act_(c.act), policy_(std::move(policy)) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < c.depth; ++i) {
    layers->push_back(torch::nn::Linear(torch::nn::LinearOptions(i == 0 ? in : out, out).bias(c.bias)));
  }
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& features) {
  auto x = features;
  for (size_t i = 0; i < layers->size(); ++i) {
    if (i > 0) x = activation(x, act_, policy_->fused);
    x = layers->ptr<torch::nn::LinearImpl>(i)->forward(x);
  }
  return x;
}

}  // namespace vlmzoo::nn
