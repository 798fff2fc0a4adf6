#include "nn/mlp.h"

namespace vlmzoo::nn {

MlpImpl::MlpImpl(int64_t in, int64_t hidden, int64_t out, std::string act, bool bias, KernelPolicyPtr policy,
                 const torch::TensorOptions& options)
    : act_(std::move(act)), policy_(std::move(policy)) {
  fc1 = register_module("fc1", Linear(in, hidden, bias, options));
  fc2 = register_module("fc2", Linear(hidden, out, bias, options));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (overridden()) return call_override({x}, [this](const auto& in) { return forward_own(in.at(0)); });
  return forward_own(x);
}

torch::Tensor MlpImpl::forward_own(const torch::Tensor& x) {
  return fc2(activation(fc1(x), act_, policy_->fused));
}

GatedMlpImpl::GatedMlpImpl(int64_t hidden, int64_t intermediate, std::string act, bool bias, KernelPolicyPtr policy,
                           const torch::TensorOptions& options)
    : act_(std::move(act)), policy_(std::move(policy)) {
  gate_proj = register_module("gate_proj", Linear(hidden, intermediate, bias, options));
  up_proj = register_module("up_proj", Linear(hidden, intermediate, bias, options));
  down_proj = register_module("down_proj", Linear(intermediate, hidden, bias, options));
}

torch::Tensor GatedMlpImpl::forward(const torch::Tensor& x) {
  if (overridden()) return call_override({x}, [this](const auto& in) { return forward_own(in.at(0)); });
  return forward_own(x);
}

torch::Tensor GatedMlpImpl::forward_own(const torch::Tensor& x) {
  return down_proj(gated_activation(gate_proj(x), up_proj(x), act_, policy_->fused));
}

}  // namespace vlmzoo::nn
