// Autograd for the norms: forward runs the op below autograd; backward: rms_norm_backward for the RMS
// norms, ATen composites in float32 for the layer norms (and under create_graph).
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/autograd_util.h"
#include "ops/checks.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = w * round(x * r), r = rsqrt(mean(x^2) + eps). Returns (dx, dw); the rounding passes gradients through.
std::pair<at::Tensor, at::Tensor> rms_norm_grads(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                                 double eps) {
  const auto type = compute_type(x);
  auto xf = x.to(type);
  auto r = at::rsqrt(xf.pow(2).mean(-1, true) + eps);
  auto x_hat = xf * r;
  auto g = grad.to(type);
  auto dweight = sum_leading(g * x_hat.to(x.scalar_type()).to(type)).to(weight.scalar_type());
  auto g_hat = g * weight.to(type);
  auto dx = r * (g_hat - x_hat * (g_hat * x_hat).mean(-1, true));
  return {dx, dweight};
}

// y = w * x_hat + b, x_hat = (x - mean) * rstd. Returns (dx, dw, db) with dx in the compute type.
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_grads(const at::Tensor& grad, const at::Tensor& x,
                                                                const at::Tensor& weight, bool has_bias, double eps) {
  const auto type = compute_type(x);
  auto xf = x.to(type);
  auto centred = xf - xf.mean(-1, true);
  auto rstd = at::rsqrt(centred.pow(2).mean(-1, true) + eps);
  auto x_hat = centred * rstd;
  auto g = grad.to(type);
  auto dweight = sum_leading(g * x_hat).to(weight.scalar_type());
  auto dbias = has_bias ? sum_leading(g).to(weight.scalar_type()) : at::Tensor();
  auto g_hat = g * weight.to(type);
  auto dx = rstd * (g_hat - g_hat.mean(-1, true) - x_hat * (g_hat * x_hat).mean(-1, true));
  return {dx, dweight, dbias};
}

// The rms_norm_backward kernel; under create_graph (double backward) the differentiable composite.
std::pair<at::Tensor, at::Tensor> rms_norm_gradients(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& weight, double eps,
                                                     const std::optional<at::Tensor>& grad_sum) {
  if (at::GradMode::is_enabled()) {
    auto [dx, dweight] = rms_norm_grads(grad, x, weight, eps);
    if (grad_sum.has_value()) dx = dx + grad_sum->to(dx.scalar_type());
    return {dx.to(x.scalar_type()), dweight};
  }
  auto [dx, dweight] = rms_norm_backward(grad, x, weight, eps, grad_sum);
  return {dx, dweight};
}

struct RmsNorm : torch::autograd::Function<RmsNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["eps"] = eps;
    return rms_norm(x, weight, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [dx, dweight] = rms_norm_gradients(grads[0], saved[0], saved[1], ctx->saved_data["eps"].toDouble(),
                                            std::nullopt);
    return {dx.to(saved[0].scalar_type()), dweight, at::Tensor()};
  }
};

struct AddRmsNorm : torch::autograd::Function<AddRmsNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                               const at::Tensor& weight, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [sum, normed] = add_rms_norm(x, residual, weight, eps);
    ctx->save_for_backward({sum, weight});
    ctx->saved_data["eps"] = eps;
    // x and residual may differ in dtype (the sum is in their promoted dtype): each gets its own back.
    ctx->saved_data["x_type"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["residual_type"] = static_cast<int64_t>(residual.scalar_type());
    return {sum, normed};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& sum = saved[0];
    std::optional<at::Tensor> grad_sum;
    if (grads[0].defined()) grad_sum = grads[0];
    auto [dsum, dweight] = rms_norm_gradients(grads[1].defined() ? grads[1] : at::zeros_like(sum), sum, saved[1],
                                              ctx->saved_data["eps"].toDouble(), grad_sum);
    dsum = dsum.to(sum.scalar_type());
    auto x_type = static_cast<at::ScalarType>(ctx->saved_data["x_type"].toInt());
    auto residual_type = static_cast<at::ScalarType>(ctx->saved_data["residual_type"].toInt());
    return {dsum.to(x_type), dsum.to(residual_type), dweight, at::Tensor()};
  }
};

struct LayerNorm : torch::autograd::Function<LayerNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["has_bias"] = bias.has_value();
    return layer_norm(x, weight, bias, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [dx, dweight, dbias] = layer_norm_grads(grads[0], saved[0], saved[1], ctx->saved_data["has_bias"].toBool(),
                                                 ctx->saved_data["eps"].toDouble());
    return {dx.to(saved[0].scalar_type()), dweight, dbias, at::Tensor()};
  }
};

struct AddLayerNorm : torch::autograd::Function<AddLayerNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& residual,
                               const at::Tensor& weight, const std::optional<at::Tensor>& bias, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [sum, normed] = add_layer_norm(x, residual, weight, bias, eps);
    ctx->save_for_backward({sum, weight});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["has_bias"] = bias.has_value();
    return {sum, normed};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [dx, dweight, dbias] = layer_norm_grads(grads[1], saved[0], saved[1], ctx->saved_data["has_bias"].toBool(),
                                                 ctx->saved_data["eps"].toDouble());
    auto dsum = (dx + grads[0].to(dx.scalar_type())).to(saved[0].scalar_type());
    return {dsum, dsum, dweight, dbias, at::Tensor()};
  }
};

struct MultiwayLayerNorm : torch::autograd::Function<MultiwayLayerNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                            const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                            const std::optional<at::Tensor>& bias_b,
                            double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight_a, weight_b});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["split"] = split;
    ctx->saved_data["has_bias_a"] = bias_a.has_value();
    ctx->saved_data["has_bias_b"] = bias_b.has_value();
    return multiway_layer_norm(x, split, weight_a, bias_a, weight_b, bias_b, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const int64_t split = ctx->saved_data["split"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    auto rest = x.sym_size(1) - split;
    auto [dxa, dwa, dba] = layer_norm_grads(grads[0].narrow(1, 0, split), x.narrow(1, 0, split), saved[1],
                                            ctx->saved_data["has_bias_a"].toBool(), eps);
    auto [dxb, dwb, dbb] = layer_norm_grads(grads[0].narrow_symint(1, split, rest), x.narrow_symint(1, split, rest),
                                            saved[2], ctx->saved_data["has_bias_b"].toBool(), eps);
    auto dx = at::cat({dxa, dxb}, 1).to(x.scalar_type());
    return {dx, at::Tensor(), dwa, dba, dwb, dbb, at::Tensor()};
  }
};

at::Tensor rms_norm_autograd(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNorm::apply(x, weight, eps);
}
std::tuple<at::Tensor, at::Tensor> add_rms_norm_autograd(const at::Tensor& x, const at::Tensor& residual,
                                                         const at::Tensor& weight, double eps) {
  auto out = AddRmsNorm::apply(x, residual, weight, eps);
  return {out[0], out[1]};
}
at::Tensor layer_norm_autograd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               double eps) {
  return LayerNorm::apply(x, weight, bias, eps);
}
std::tuple<at::Tensor, at::Tensor> add_layer_norm_autograd(const at::Tensor& x, const at::Tensor& residual,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias, double eps) {
  auto out = AddLayerNorm::apply(x, residual, weight, bias, eps);
  return {out[0], out[1]};
}
at::Tensor multiway_layer_norm_autograd(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                        const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                        const std::optional<at::Tensor>& bias_b, double eps) {
  return MultiwayLayerNorm::apply(x, split, weight_a, bias_a, weight_b,
                                  bias_b, eps);
}
// Backends without an rms_norm_backward kernel of their own (CUDA for now) run the reference.
std::tuple<at::Tensor, at::Tensor> rms_norm_backward_fallback(const at::Tensor& grad, const at::Tensor& x,
                                                              const at::Tensor& weight, double eps,
                                                              const std::optional<at::Tensor>& grad_sum) {
  check_rms_norm_backward(grad, x, weight, grad_sum);
  auto [dx, dweight] = reference_rms_norm_backward(grad, x, weight, eps, grad_sum);
  return {dx.contiguous(), dweight.contiguous()};
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) {
  m.impl("rms_norm_backward", &rms_norm_backward_fallback);
}

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) {
  m.impl("rms_norm", &rms_norm_autograd);
  m.impl("add_rms_norm", &add_rms_norm_autograd);
  m.impl("layer_norm", &layer_norm_autograd);
  m.impl("add_layer_norm", &add_layer_norm_autograd);
  m.impl("multiway_layer_norm", &multiway_layer_norm_autograd);
}

}  // namespace vlmzoo::ops
