#include "nn/mlp.h"

namespace vlmzoo::nn {

namespace {
torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}
}  // namespace

MlpImpl::MlpImpl(int64_t in, int64_t hidden, int64_t out, std::string act, bool bias, KernelPolicyPtr policy)
    : act_(std::move(act)), policy_(std::move(policy)) {
  fc1 = register_module("fc1", linear(in, hidden, bias));
  fc2 = register_module("fc2", linear(hidden, out, bias));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return fc2(activation(fc1(x), act_, policy_->fused));
}

GatedMlpImpl::GatedMlpImpl(int64_t hidden, int64_t intermediate, std::string act, bool bias, KernelPolicyPtr policy)
    : act_(std::move(act)), policy_(std::move(policy)) {
  gate_proj = register_module("gate_proj", linear(hidden, intermediate, bias));
  up_proj = register_module("up_proj", linear(hidden, intermediate, bias));
  down_proj = register_module("down_proj", linear(intermediate, hidden, bias));
}

torch::Tensor GatedMlpImpl::forward(const torch::Tensor& x) {
  return down_proj(gated_activation(gate_proj(x), up_proj(x), act_, policy_->fused));
}

}  // namespace vlmzoo::nn
