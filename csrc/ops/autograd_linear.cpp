// Autograd for the packed-weight linear ops, and their fallback on backends without a kernel (the
// reference). Backward passes are ATen composites on the unpacked weights, so they run everywhere and
// are themselves differentiable.
//   linear_bf16: gradients for x, the packed weight (in the packed layout and dtype: grad_out^T x packed
//     like the weight, zeros in the padding, so an elementwise optimizer can step the packed tensor
//     directly) and bias.
//   linear_int8: inference weights. x gets the straight-through gradient grad_out @ dequantize(w) (the
//     activation rounding treated as identity), bias its plain gradient; the int8 weight and col_sums
//     are integers (no gradient) and scales that require grad are refused.
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/autograd_util.h"
#include "ops/linear_formats.h"
#include "ops/ops.h"
#include "ops/reference.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// g: [..., N] -> [rows, N] in type.
at::Tensor grad_rows(const at::Tensor& g, int64_t n, at::ScalarType type) { return g.reshape({-1, n}).to(type); }

struct LinearBf16 : torch::autograd::Function<LinearBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                            const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, packed});
    ctx->saved_data["out_features"] = out_features;
    ctx->saved_data["bias_type"] = bias.has_value() ? static_cast<int64_t>(bias->scalar_type()) : int64_t{-1};
    return linear_bf16(x, packed, out_features, bias);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& packed = saved[1];
    const int64_t n = ctx->saved_data["out_features"].toInt(), k = x.size(-1);
    const int64_t bias_type = ctx->saved_data["bias_type"].toInt();
    const auto type = compute_type(x);
    auto g = grad_rows(grads[0], n, type);
    at::Tensor dx, dpacked, dbias;
    if (ctx->needs_input_grad(0))
      dx = at::mm(g, unpack_linear_bf16(packed, n, k).to(type)).view(x.sizes()).to(x.scalar_type());
    if (ctx->needs_input_grad(1)) dpacked = pack_linear_bf16(at::mm(g.t(), x.reshape({-1, k}).to(type)));
    if (bias_type >= 0 && ctx->needs_input_grad(2)) dbias = g.sum(0).to(static_cast<at::ScalarType>(bias_type));
    return {dx, dpacked, at::Tensor(), dbias};
  }
};

struct LinearInt8 : torch::autograd::Function<LinearInt8> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& packed,
                            const at::Tensor& scales, const at::Tensor& col_sums,
                            const std::optional<at::Tensor>& bias) {
    TORCH_CHECK(!scales.requires_grad(), "vlmzoo::linear_int8: int8 weights are for inference: their scales get no "
                "gradient (detach them; x and bias do get gradients, x's straight through the quantisation)");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({packed, scales});
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["x_shape"] = x.sizes().vec();
    ctx->saved_data["bias_type"] = bias.has_value() ? static_cast<int64_t>(bias->scalar_type()) : int64_t{-1};
    return linear_int8(x, packed, scales, col_sums, bias);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto x_shape = ctx->saved_data["x_shape"].toIntVector();
    const auto x_type = static_cast<at::ScalarType>(ctx->saved_data["x_type"].toInt());
    const int64_t bias_type = ctx->saved_data["bias_type"].toInt();
    const auto& scales = saved[1];
    const auto type = at::promote_types(x_type, at::kFloat);
    auto g = grad_rows(grads[0], scales.size(0), type);
    at::Tensor dx, dbias;
    if (ctx->needs_input_grad(0))
      dx = at::mm(g, dequantize_linear_int8(saved[0], scales, x_shape.back()).to(type)).view(x_shape).to(x_type);
    // Tensor inputs with an autograd edge: x, packed, scales, col_sums, then bias.
    if (bias_type >= 0 && ctx->needs_input_grad(4)) dbias = g.sum(0).to(static_cast<at::ScalarType>(bias_type));
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), dbias};
  }
};

// Whether any of the tensors will want a gradient: without one, the ops skip autograd::Function's
// bookkeeping (a few microseconds a call, noticeable at decode, where a call is tens of microseconds).
bool any_requires_grad(std::initializer_list<const at::Tensor*> tensors) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : tensors)
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  return false;
}

at::Tensor linear_bf16_autograd(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                                const std::optional<at::Tensor>& bias) {
  if (!any_requires_grad({&x, &packed, bias ? &*bias : nullptr})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return linear_bf16(x, packed, out_features, bias);
  }
  return LinearBf16::apply(x, packed, out_features, bias);
}
at::Tensor linear_int8_autograd(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  if (!any_requires_grad({&x, &scales, bias ? &*bias : nullptr})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return linear_int8(x, packed, scales, col_sums, bias);
  }
  return LinearInt8::apply(x, packed, scales, col_sums, bias);
}

// Backends without a kernel (CUDA for now) run the reference.
at::Tensor linear_bf16_fallback(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                                const std::optional<at::Tensor>& bias) {
  check_linear_bf16(x, packed, out_features, bias);
  return reference_linear_bf16(x, packed, out_features, bias).contiguous();
}
at::Tensor linear_int8_fallback(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  check_linear_int8(x, packed, scales, col_sums, bias);
  return reference_linear_int8(x, packed, scales, col_sums, bias).contiguous();
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) {
  m.impl("linear_bf16", &linear_bf16_autograd);
  m.impl("linear_int8", &linear_int8_autograd);
}
TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) {
  m.impl("linear_bf16", &linear_bf16_fallback);
  m.impl("linear_int8", &linear_int8_fallback);
}

}  // namespace vlmzoo::ops
