// Autograd for cross_entropy: the forward keeps the row log-sum-exp, the backward writes dlogits in one
// pass (cross_entropy_backward). Under create_graph the differentiable reference takes over.
// Backends without kernels of their own (CUDA for now) run the references.
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CrossEntropy : torch::autograd::Function<CrossEntropy> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                               int64_t ignore_index) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse] = cross_entropy(logits, labels, ignore_index);
    ctx->save_for_backward({logits, labels, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->mark_non_differentiable({lse});
    return {loss, lse};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const auto& grad = grads[0].defined() ? grads[0] : at::zeros_like(saved[2]);
    if (at::GradMode::is_enabled()) {  // differentiable through the logits, lse included
      auto lse = at::logsumexp(saved[0].to(at::promote_types(saved[0].scalar_type(), at::kFloat)), -1);
      return {reference_cross_entropy_backward(grad, saved[0], saved[1], lse, ignore_index), at::Tensor(), at::Tensor()};
    }
    auto dlogits = cross_entropy_backward(grad, saved[0], saved[1], saved[2], ignore_index);
    return {dlogits, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> cross_entropy_autograd(const at::Tensor& logits, const at::Tensor& labels,
                                                          int64_t ignore_index) {
  auto out = CrossEntropy::apply(logits, labels, ignore_index);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_fallback(const at::Tensor& logits, const at::Tensor& labels,
                                                          int64_t ignore_index) {
  check_cross_entropy(logits, labels, ignore_index, /*check_labels=*/true);
  return reference_cross_entropy(logits, labels, ignore_index);
}

at::Tensor cross_entropy_backward_fallback(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                           const at::Tensor& lse, int64_t ignore_index) {
  check_cross_entropy_backward(grad, logits, labels, lse);
  return reference_cross_entropy_backward(grad, logits, labels, lse, ignore_index).contiguous();
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) { m.impl("cross_entropy", &cross_entropy_autograd); }
TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) {
  m.impl("cross_entropy", &cross_entropy_fallback);
  m.impl("cross_entropy_backward", &cross_entropy_backward_fallback);
}

}  // namespace vlmzoo::ops
