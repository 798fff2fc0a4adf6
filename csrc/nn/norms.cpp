#include "nn/norms.h"

namespace vlmzoo::nn {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options) : eps_(eps), policy_(std::move(policy)) {
  weight = register_parameter("weight", torch::ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (overridden()) return call_override({x}, [this](const auto& in) { return forward_own(in.at(0)); });
  return forward_own(x);
}

torch::Tensor RMSNormImpl::forward_own(const torch::Tensor& x) { return rms_norm(x, weight, eps_, policy_->fused); }

std::pair<torch::Tensor, torch::Tensor> RMSNormImpl::forward_residual(const torch::Tensor& x,
                                                                      const torch::Tensor& residual) {
  if (overridden()) {
    auto sum = x + residual;
    return {sum, forward(sum)};
  }
  return add_rms_norm(x, residual, weight, eps_, policy_->fused);
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps, KernelPolicyPtr policy, const torch::TensorOptions& options) : eps_(eps), policy_(std::move(policy)) {
  weight = register_parameter("weight", torch::ones({dim}, options));
  bias = register_parameter("bias", torch::zeros({dim}, options));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (overridden()) return call_override({x}, [this](const auto& in) { return forward_own(in.at(0)); });
  return forward_own(x);
}

torch::Tensor LayerNormImpl::forward_own(const torch::Tensor& x) {
  return layer_norm(x, weight, bias, eps_, policy_->fused);
}

}  // namespace vlmzoo::nn
