// Autograd for attention: the forward is the fused kernel; the backward is vlmzoo::attention_backward
// (on CPU a tiled kernel that never holds the [B, H, Tq, Tk] probabilities; elsewhere, until a kernel
// exists, the ATen reference that recomputes them). When the backward itself is differentiated
// (create_graph=True) it is the ATen reference, which autograd can trace.
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/autograd_util.h"
#include "ops/checks.h"
#include "ops/ops.h"
#include "ops/reference.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Attention : torch::autograd::Function<Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& allowed, std::optional<double> scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = attention(q, k, v, allowed, scale);
    // The output gives the backward D = rowsum(dO * O) without recomputing it.
    ctx->save_for_backward({q, k, v, allowed.value_or(at::Tensor()), out});
    ctx->saved_data["scale"] = attention_scale(q, scale);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto& q = saved[0];
    const auto& k = saved[1];
    const auto& v = saved[2];
    const auto allowed = opt(saved[3]);
    const auto& out = saved[4];
    const auto& grad = grads[0];
    auto [dq, dk, dv] = at::GradMode::is_enabled()
                            ? reference_attention_backward(grad, q, k, v, out, allowed, scale)
                            : attention_backward(grad.to(q.scalar_type()), q, k, v, out, allowed, scale);
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& allowed, std::optional<double> scale) {
  return Attention::apply(q, k, v, allowed, scale);
}

// Backends without an attention_backward kernel of their own (CUDA for now) run the reference.
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_fallback(const at::Tensor& grad, const at::Tensor& q,
                                                                           const at::Tensor& k, const at::Tensor& v,
                                                                           const at::Tensor& out,
                                                                           const std::optional<at::Tensor>& allowed,
                                                                           double scale) {
  check_attention_backward(grad, q, k, v, out, allowed);
  auto [dq, dk, dv] = reference_attention_backward(grad, q, k, v, out, allowed, scale);
  return {dq.contiguous(), dk.contiguous(), dv.contiguous()};
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) { m.impl("attention", &attention_autograd); }
TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) {
  m.impl("attention_backward", &attention_backward_fallback);
}

}  // namespace vlmzoo::ops
