#include "nn/linear.h"

namespace vlmzoo::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out, in}, options));
  if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({count, dim}, options));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

PatchConvImpl::PatchConvImpl(int64_t channels, int64_t out, int64_t patch, bool bias,
                             const torch::TensorOptions& options)
    : patch_(patch) {
  weight = register_parameter("weight", torch::empty({out, channels, patch, patch}, options));
  if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
}

torch::Tensor PatchConvImpl::forward(const torch::Tensor& pixels) {
  return torch::conv2d(pixels, weight, bias, {patch_, patch_});
}

}  // namespace vlmzoo::nn
