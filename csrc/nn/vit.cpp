#include "nn/vit.h"

namespace vlmzoo::nn {

void check_pixel_values(const torch::Tensor& pixel_values, int64_t channels, int64_t height, int64_t width,
                        const std::string& what) {
  TORCH_CHECK_VALUE(pixel_values.dim() == 4 && pixel_values.size(1) == channels && pixel_values.size(2) == height &&
                        pixel_values.size(3) == width,
                    "pixel_values: expected [num_images, ", channels, ", ", height, ", ", width, "] (", what, "), got ",
                    pixel_values.sizes());
  check_pixel_dtype_and_values(pixel_values);
}

void check_pixel_dtype_and_values(const torch::Tensor& pixel_values) {
  TORCH_CHECK_VALUE(pixel_values.is_floating_point(), "pixel_values: dtype torch.",
                    c10::getDtypeNames(pixel_values.scalar_type()).first,
                    "; expected floating-point pixels normalised with the vision tower's mean and std (convert 0-255 "
                    "images: (x.float() / 255 - mean) / std)");
  if (pixel_values.device().type() != torch::kMeta && pixel_values.numel() > 0) {
    auto finite = torch::isfinite(pixel_values);
    if (!finite.all().item<bool>()) {
      const int64_t nan = torch::isnan(pixel_values).sum().item<int64_t>();
      const int64_t inf = (~finite).sum().item<int64_t>() - nan;
      TORCH_CHECK_VALUE(false, "pixel_values: ", nan, " NaN and ", inf, " inf values of ", pixel_values.numel());
    }
  }
}

VitLayerImpl::VitLayerImpl(const VitOptions& o, KernelPolicyPtr policy, const torch::TensorOptions& options) {
  norm1 = register_module("norm1", LayerNorm(o.hidden, o.eps, policy, options));
  attn = register_module(
      "attn", Attention(AttentionOptions{o.hidden, o.hidden, o.heads, o.heads, o.hidden / o.heads, true}, policy, options));
  norm2 = register_module("norm2", LayerNorm(o.hidden, o.eps, policy, options));
  mlp = register_module("mlp", Mlp(o.hidden, o.mlp, o.hidden, o.act, true, policy, options));
}

torch::Tensor VitLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& allowed) {
  if (overridden()) return call_override({x}, [&](const auto& in) { return forward_own(in.at(0), allowed); });
  return forward_own(x, allowed);
}

torch::Tensor VitLayerImpl::forward_own(const torch::Tensor& x, const torch::Tensor& allowed) {
  auto h = x + attn(norm1(x), allowed);
  return h + mlp(norm2(h));
}

}  // namespace vlmzoo::nn
