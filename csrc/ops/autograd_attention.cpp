// Autograd for attention: the forward is the fused kernel; the backward recomputes the probabilities
// with ATen (so it does hold [B, H, Tq, Tk] scores) and applies the softmax gradient.
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>

#include "ops/autograd_util.h"
#include "ops/checks.h"
#include "ops/ops.h"

namespace vlmzoo::ops {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [B, Hkv * G, ...] -> [B, Hkv, ...], summing each group of G query heads onto its kv head.
at::Tensor sum_groups(const at::Tensor& t, const c10::SymInt& kv_heads, const c10::SymInt& groups) {
  if (groups == 1) return t;
  return t.unflatten_symint(1, {kv_heads, groups}).sum(2);
}

struct Attention : torch::autograd::Function<Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& allowed, std::optional<double> scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({q, k, v, allowed.value_or(at::Tensor())});
    ctx->saved_data["scale"] = attention_scale(q, scale);
    return attention(q, k, v, allowed, scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& q_in = saved[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    const auto type = compute_type(q_in);
    auto q = q_in.to(type), k = saved[1].to(type), v = saved[2].to(type);
    const auto& allowed = saved[3];
    auto kv_heads = k.sym_size(1), groups = q.sym_size(1) / kv_heads;
    auto kk = groups == 1 ? k : k.repeat_interleave_symint(groups, 1);
    auto vv = groups == 1 ? v : v.repeat_interleave_symint(groups, 1);
    auto scores = at::matmul(q, kk.transpose(-1, -2)) * scale;
    if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
    auto probs = at::nan_to_num(at::softmax(scores, -1), 0.0);  // rows with nothing to attend to: zeros
    auto g = grads[0].to(type);
    auto dv = sum_groups(at::matmul(probs.transpose(-1, -2), g), kv_heads, groups);
    auto dprobs = at::matmul(g, vv.transpose(-1, -2));
    auto dscores = probs * (dprobs - (dprobs * probs).sum(-1, true));
    auto dq = at::matmul(dscores, kk) * scale;
    auto dk = sum_groups(at::matmul(dscores.transpose(-1, -2), q), kv_heads, groups) * scale;
    return {dq.to(q_in.scalar_type()), dk.to(saved[1].scalar_type()), dv.to(saved[2].scalar_type()), at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const std::optional<at::Tensor>& allowed, std::optional<double> scale) {
  return Attention::apply(q, k, v, allowed, scale);
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, Autograd, m) { m.impl("attention", &attention_autograd); }

}  // namespace vlmzoo::ops
