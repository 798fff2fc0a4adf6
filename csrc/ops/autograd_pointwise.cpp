// Autograd for the activations (backward: the act_backward op), rope (backward: rope itself, or ATen
// composites) and multiway_linear (ATen composites).
#include <ATen/ExpandUtils.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>

#include "ops/autograd_util.h"
#include "ops/checks.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The act_backward kernel; under create_graph (double backward) the differentiable reference composite.
std::tuple<at::Tensor, at::Tensor> act_gradients(const at::Tensor& grad, const at::Tensor& x,
                                                 const std::optional<at::Tensor>& bias,
                                                 const std::optional<at::Tensor>& up, const std::string& act) {
  if (at::GradMode::is_enabled()) return reference_act_backward(grad, x, bias, up, act);
  return act_backward(grad, x, bias, up, act);
}

struct BiasAct : torch::autograd::Function<BiasAct> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                            c10::string_view act) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, bias.value_or(at::Tensor())});
    ctx->saved_data["act"] = std::string(act);
    return bias_act(x, bias, std::string(act));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& bias = saved[1];
    auto dx = std::get<0>(act_gradients(grads[0].to(x.scalar_type()), x, opt(bias), std::nullopt,
                                        ctx->saved_data["act"].toStringRef()));
    auto dbias = bias.defined() ? sum_leading(dx.to(compute_type(x))).to(bias.scalar_type()) : at::Tensor();
    return {dx, dbias, at::Tensor()};
  }
};

struct GatedAct : torch::autograd::Function<GatedAct> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({gate, up});
    ctx->saved_data["act"] = std::string(act);
    return gated_act(gate, up, std::string(act));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [dgate, dup] = act_gradients(grads[0].to(saved[0].scalar_type()), saved[0], std::nullopt, saved[1],
                                      ctx->saved_data["act"].toStringRef());
    return {dgate, dup, at::Tensor()};
  }
};

// rotate_half's adjoint: rotate_half(x) = cat(-x2, x1), so its transpose maps y to cat(y2, -y1).
at::Tensor rotate_half_transposed(const at::Tensor& y) {
  auto half = y.sym_size(-1) / 2;
  return at::cat({y.narrow_symint(-1, half, half), -y.narrow_symint(-1, 0, half)}, -1);
}

struct Rope : torch::autograd::Function<Rope> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                               const at::Tensor& sin) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({q, k, cos, sin});
    auto [q_out, k_out] = rope(q, k, cos, sin);
    return {q_out, k_out};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& cos = saved[2];
    const auto& sin = saved[3];
    // rope's transpose is rope with -sin when sin repeats across its two halves (every rope here builds
    // cat(freqs, freqs)): rotate_half^T(g * s) = -rotate_half(g) * s. One kernel pass instead of composites.
    if (!at::GradMode::is_enabled() && grads[0].defined() && grads[1].defined() && !ctx->needs_input_grad(2) && !ctx->needs_input_grad(3) &&
        grads[0].scalar_type() == saved[0].scalar_type() && grads[1].scalar_type() == saved[1].scalar_type()) {
      // Reading sin's values is only possible on a real tensor: fake, meta and functional tensors (torch.compile,
      // opcheck) take the composite below, which is right for any sin. (Meta is a backend, not a functionality
      // key: in has_any it would match every dense tensor, so it is tested with is_meta.)
      const bool concrete = !sin.unsafeGetTensorImpl()->has_symbolic_sizes_strides() && !sin.is_meta() &&
                            !sin.key_set().has_any(
                                c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::Functionalize}));
      const int64_t half = sin.size(-1) / 2;
      if (concrete && at::equal(sin.narrow(-1, 0, half), sin.narrow(-1, half, half))) {
        auto [dq, dk] = rope(grads[0], grads[1], cos, sin.neg());
        return {dq, dk, at::Tensor(), at::Tensor()};
      }
    }
    const auto type = compute_type(saved[0]);
    // As in the forward: cos/sin rounded to the input dtype, [B, T, r] -> [B, 1, T, r].
    auto c = cos.to(saved[0].scalar_type()).to(type).unsqueeze(1);
    auto s = sin.to(saved[0].scalar_type()).to(type).unsqueeze(1);
    auto r = cos.sym_size(-1);
    at::Tensor dcos, dsin;
    variable_list out;
    for (int i = 0; i < 2; ++i) {
      const auto& x = saved[i];
      auto g = grads[i].to(type);
      auto d = x.sym_size(-1);
      auto g_rot = g.narrow_symint(-1, 0, r);
      auto dx_rot = g_rot * c + rotate_half_transposed(g_rot * s);
      auto dx = r == d ? dx_rot : at::cat({dx_rot, g.narrow_symint(-1, r, d - r)}, -1);
      out.push_back(dx.to(x.scalar_type()));
      if (ctx->needs_input_grad(2) || ctx->needs_input_grad(3)) {
        auto x_rot = x.to(type).narrow_symint(-1, 0, r);
        auto dc = (g_rot * x_rot).sum(1), ds = (g_rot * rotate_half(x_rot)).sum(1);
        dcos = dcos.defined() ? dcos + dc : dc;
        dsin = dsin.defined() ? dsin + ds : ds;
      }
    }
    if (dcos.defined()) {
      dcos = at::sum_to(dcos, cos.sym_sizes()).to(cos.scalar_type());
      dsin = at::sum_to(dsin, sin.sym_sizes()).to(sin.scalar_type());
    }
    out.push_back(dcos);
    out.push_back(dsin);
    return out;
  }
};

struct MultiwayLinear : torch::autograd::Function<MultiwayLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                            const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                            const std::optional<at::Tensor>& bias_b) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight_a, weight_b});
    ctx->saved_data["split"] = split;
    ctx->saved_data["has_bias_a"] = bias_a.has_value();
    ctx->saved_data["has_bias_b"] = bias_b.has_value();
    return multiway_linear(x, split, weight_a, bias_a, weight_b, bias_b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const int64_t split = ctx->saved_data["split"].toInt();
    auto rest = x.sym_size(1) - split;
    auto g = grads[0];
    auto ga = g.narrow(1, 0, split), gb = g.narrow_symint(1, split, rest);
    auto xa = x.narrow(1, 0, split), xb = x.narrow_symint(1, split, rest);
    auto dx = at::cat({at::matmul(ga, saved[1]), at::matmul(gb, saved[2])}, 1);
    auto dwa = at::matmul(ga.flatten(0, 1).t(), xa.flatten(0, 1));
    auto dwb = at::matmul(gb.flatten(0, 1).t(), xb.flatten(0, 1));
    auto dba = ctx->saved_data["has_bias_a"].toBool() ? ga.sum({0, 1}) : at::Tensor();
    auto dbb = ctx->saved_data["has_bias_b"].toBool() ? gb.sum({0, 1}) : at::Tensor();
    return {dx, at::Tensor(), dwa, dba, dwb, dbb};
  }
};

at::Tensor bias_act_autograd(const at::Tensor& x, const std::optional<at::Tensor>& bias, c10::string_view act) {
  return BiasAct::apply(x, bias, act);
}
at::Tensor gated_act_autograd(const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
  return GatedAct::apply(gate, up, act);
}
std::tuple<at::Tensor, at::Tensor> rope_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                 const at::Tensor& sin) {
  auto out = Rope::apply(q, k, cos, sin);
  return {out[0], out[1]};
}
at::Tensor multiway_linear_autograd(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                    const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                    const std::optional<at::Tensor>& bias_b) {
  return MultiwayLinear::apply(x, split, weight_a, bias_a, weight_b,
                               bias_b);
}

// Backends without an act_backward kernel of their own (CUDA for now) run the reference.
std::tuple<at::Tensor, at::Tensor> act_backward_fallback(const at::Tensor& grad, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& bias,
                                                         const std::optional<at::Tensor>& up, c10::string_view act) {
  parse_act(act);
  check_act_backward(grad, x, bias, up);
  auto [dx, dup] = reference_act_backward(grad, x, bias, up, std::string(act));
  return {dx.contiguous(), dup.defined() ? dup.contiguous() : dup};
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) { m.impl("act_backward", &act_backward_fallback); }

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) {
  m.impl("bias_act", &bias_act_autograd);
  m.impl("gated_act", &gated_act_autograd);
  m.impl("rope", &rope_autograd);
  m.impl("multiway_linear", &multiway_linear_autograd);
}

}  // namespace vlmzoo::ops
