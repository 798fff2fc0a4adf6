#include "nn/linear.h"

#include "nn/linear_float.h"

#include "ops/linear_formats.h"
#include "ops/ops.h"

namespace vlmzoo::nn {

WeightFormat weight_format_named(const std::string& name) {
  if (name == "float") return WeightFormat::kFloat;
  if (name == "bf16") return WeightFormat::kBf16;
  TORCH_CHECK_VALUE(name == "int8", "weight format \"", name, "\" is not one of float, bf16, int8");
  return WeightFormat::kInt8;
}

std::string weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBf16: return "bf16";
    case WeightFormat::kInt8: return "int8";
    default: return "float";
  }
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) : in_(in), out_(out) {
  weight = register_parameter("weight", torch::empty({out, in}, options));
  if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  return override_forward ? override_forward(x) : forward_with_bias(x, bias);
}

torch::Tensor LinearImpl::forward_with_bias(const torch::Tensor& x, const torch::Tensor& b) {
  const std::optional<at::Tensor> optional_bias = b.defined() ? std::optional<at::Tensor>(b) : std::nullopt;
  switch (format_) {
    case WeightFormat::kBf16: return ops::linear_bf16(x, weight_bf16, out_, optional_bias);
    case WeightFormat::kInt8: return ops::linear_int8(x, weight_int8, weight_scales, weight_col_sums, optional_bias);
    default: return linear_float(x, weight, b, /*fused=*/true);
  }
}

void LinearImpl::set_weight_format(WeightFormat format) {
  if (format == WeightFormat::kFloat && format_ == WeightFormat::kFloat) return;
  TORCH_CHECK(format_ == WeightFormat::kFloat, "linear weights are already packed as ", weight_format_name(format_),
              "; a model is quantised once, from its float weights (build or load it again to choose another "
              "format)");
  torch::NoGradGuard no_grad;
  const auto packed = [&](const std::string& name, const torch::Tensor& t) {
    return register_parameter(name, t, /*requires_grad=*/false);
  };
  if (format == WeightFormat::kBf16) {
    weight_bf16 = packed("weight_bf16", ops::pack_linear_bf16(weight));
  } else {
    auto [q, scales, col_sums] = ops::quantize_linear_int8(weight);
    weight_int8 = packed("weight_int8", q);
    weight_scales = packed("weight_scales", scales);
    weight_col_sums = packed("weight_col_sums", col_sums);
  }
  parameters_.erase("weight");
  weight = torch::Tensor();
  format_ = format;
}

void LinearImpl::train(bool on) {
  TORCH_CHECK(!on || format_ == WeightFormat::kFloat, "this model's linear weights are quantised (",
              weight_format_name(format_), "): it runs for inference only. Train the float model, then quantise a "
              "copy of it");
  torch::nn::Module::train(on);
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({count, dim}, options));
}

torch::Tensor linear_float(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool fused) {
  const int64_t in = weight.dim() == 2 ? weight.size(1) : 0;
  const bool float_cpu = x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
                         weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() &&
                         (!bias.defined() || bias.scalar_type() == torch::kFloat32);
  if (!fused || !float_cpu || in == 0 || x.dim() == 0 || x.size(-1) != in) return torch::linear(x, weight, bias);
  const int64_t rows = x.numel() / in;
  if (rows < 2 || rows > kFewRowsMax) return torch::linear(x, weight, bias);
  auto x_t = x.reshape({rows, in}).t();  // [in, rows]
  auto y_t = bias.defined() ? torch::addmm(bias.unsqueeze(1), weight, x_t) : torch::mm(weight, x_t);  // [out, rows]
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y_t.t().contiguous().view(sizes);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

void EmbeddingImpl::set_weight(const torch::Tensor& w) {
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == weight.size(1), "embedding weight: expected [count, ", weight.size(1),
                    "], got ", w.sizes());
  parameters_["weight"] = w;  // register_parameter refuses a name it holds
  weight = w;
}

void LinearImpl::set_weight(const torch::Tensor& w) {
  TORCH_CHECK_VALUE(format_ == WeightFormat::kFloat, "linear weight: packed as ", weight_format_name(format_),
                    "; a quantised layer cannot be resized");
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == in_ && !bias.defined(), "linear weight: expected [rows, ", in_,
                    "] without a bias, got ", w.sizes());
  parameters_["weight"] = w;
  weight = w;
  out_ = w.size(0);
}

PatchConvImpl::PatchConvImpl(int64_t channels, int64_t out, int64_t patch, bool bias,
                             const torch::TensorOptions& options)
    : patch_(patch) {
  weight = register_parameter("weight", torch::empty({out, channels, patch, patch}, options));
  if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
}

torch::Tensor PatchConvImpl::forward(const torch::Tensor& pixels) {
  return torch::conv2d(pixels, weight, bias, {patch_, patch_});
}

namespace {
std::vector<LinearImpl*> linears_under(const torch::nn::Module& root) {
  std::vector<LinearImpl*> found;
  for (const auto& module : root.modules(/*include_self=*/true))
    if (auto* linear = module->as<LinearImpl>()) found.push_back(linear);
  return found;
}
}  // namespace

int64_t set_weight_format(torch::nn::Module& root, WeightFormat format) {
  const auto linears = linears_under(root);
  for (auto* linear : linears)  // every check first, so a refused call changes nothing
    TORCH_CHECK(linear->weight_format() == WeightFormat::kFloat,
                "linear weights are already packed as ", weight_format_name(linear->weight_format()),
                "; a model is quantised once, from its float weights (build or load it again to choose another "
                "format)");
  for (auto* linear : linears) linear->set_weight_format(format);
  return static_cast<int64_t>(linears.size());
}

WeightFormat weight_format_of(const torch::nn::Module& root) {
  for (auto* linear : linears_under(root))
    if (linear->weight_format() != WeightFormat::kFloat) return linear->weight_format();
  return WeightFormat::kFloat;
}

}  // namespace vlmzoo::nn
