#include "ops/checks.h"
#include "ops/training_ops.h"

#include <cmath>

namespace vlmzoo::ops {

Act parse_act(c10::string_view act) {
  if (act == "gelu") return Act::gelu;
  if (act == "gelu_tanh") return Act::gelu_tanh;
  if (act == "quick_gelu") return Act::quick_gelu;
  if (act == "relu") return Act::relu;
  if (act == "relu2") return Act::relu2;
  if (act == "silu") return Act::silu;
  TORCH_CHECK_VALUE(false, "unknown activation \"", act,
                    "\" (expected gelu, gelu_tanh, quick_gelu, relu, relu2 or silu)");
}

namespace {
void check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must be floating point, got ", t.scalar_type());
}

void check_vector(const char* op, const char* name, const at::Tensor& t, const c10::SymInt& size) {
  check_float(op, name, t);
  TORCH_CHECK(t.dim() == 1 && t.sym_size(0) == size, op, ": ", name, " must have shape [", size, "], got ",
              t.sym_sizes());
}
}  // namespace

void check_norm(const char* op, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const at::Tensor* residual) {
  check_float(op, "x", x);
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension");
  check_vector(op, "weight", weight, x.sym_size(-1));
  if (bias.has_value()) check_vector(op, "bias", *bias, x.sym_size(-1));
  if (residual != nullptr) {
    TORCH_CHECK(residual->sym_sizes() == x.sym_sizes(), op, ": residual has shape ", residual->sym_sizes(),
                " but x has shape ", x.sym_sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type(), op, ": residual is ", residual->scalar_type(),
                " but x is ", x.scalar_type());
  }
}

at::ScalarType rms_norm_out_type(const at::Tensor& x, const at::Tensor& weight) {
  return rms_norm_out_type(x.scalar_type(), weight);
}

at::ScalarType rms_norm_out_type(at::ScalarType x, const at::Tensor& weight) {
  return at::promote_types(x, weight.scalar_type());
}

void check_add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight) {
  const char* op = "vlmzoo::add_rms_norm";
  check_norm(op, x, weight, std::nullopt);
  check_float(op, "residual", residual);
  TORCH_CHECK(residual.sym_sizes() == x.sym_sizes(), op, ": residual has shape ", residual.sym_sizes(),
              " but x has shape ", x.sym_sizes());
}

void check_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  check_float("vlmzoo::bias_act", "x", x);
  if (bias.has_value()) check_vector("vlmzoo::bias_act", "bias", *bias, x.sym_size(-1));
}

void check_gated_act(const at::Tensor& gate, const at::Tensor& up) {
  check_float("vlmzoo::gated_act", "gate", gate);
  TORCH_CHECK(up.sym_sizes() == gate.sym_sizes(), "vlmzoo::gated_act: up has shape ", up.sym_sizes(),
              " but gate has shape ", gate.sym_sizes());
  TORCH_CHECK(up.scalar_type() == gate.scalar_type(), "vlmzoo::gated_act: up is ", up.scalar_type(),
              " but gate is ", gate.scalar_type());
}

void check_rms_norm_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& grad_sum) {
  const char* op = "vlmzoo::rms_norm_backward";
  check_norm(op, x, weight, std::nullopt);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad", &grad},
                         {"grad_sum", grad_sum ? &*grad_sum : nullptr}}) {
    if (t == nullptr) continue;
    check_float(op, name, *t);
    TORCH_CHECK(t->sym_sizes() == x.sym_sizes(), op, ": ", name, " has shape ", t->sym_sizes(), " but x has shape ",
                x.sym_sizes());
  }
}

void check_act_backward(const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                        const std::optional<at::Tensor>& up) {
  const char* op = "vlmzoo::act_backward";
  check_float(op, "x", x);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad", &grad}, {"up", up ? &*up : nullptr}}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->sym_sizes() == x.sym_sizes(), op, ": ", name, " has shape ", t->sym_sizes(), " but x has shape ",
                x.sym_sizes());
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": ", name, " is ", t->scalar_type(), " but x is ",
                x.scalar_type());
  }
  if (bias.has_value()) check_vector(op, "bias", *bias, x.sym_size(-1));
}

void check_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index, bool check_labels) {
  const char* op = "vlmzoo::cross_entropy";
  check_float(op, "logits", logits);
  TORCH_CHECK_VALUE(logits.dim() >= 1, op, ": logits must be [..., vocab], got a scalar");
  TORCH_CHECK_VALUE(labels.scalar_type() == at::kLong, op, ": labels must be int64 (torch.long), got ",
                    labels.scalar_type());
  TORCH_CHECK_VALUE(labels.sym_sizes() == logits.sym_sizes().slice(0, logits.dim() - 1), op, ": labels have shape ",
                    labels.sym_sizes(), " but logits ", logits.sym_sizes(), " need labels of shape ",
                    logits.sym_sizes().slice(0, logits.dim() - 1));
  TORCH_CHECK_VALUE(labels.device() == logits.device(), op, ": labels are on ", labels.device(), " but logits on ",
                    logits.device());
  if (check_labels && labels.numel() > 0) {
    const int64_t vocab = logits.size(-1);
    auto bad = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index);
    if (bad.any().item<bool>()) {
      auto index = bad.reshape({-1}).nonzero()[0][0].item<int64_t>();
      TORCH_CHECK_VALUE(false, op, ": label ", labels.reshape({-1})[index].item<int64_t>(), " (flat position ", index,
                        ") is outside [0, ", vocab, ") and is not ignore_index ", ignore_index);
    }
  }
}

void check_cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                  const at::Tensor& lse) {
  check_cross_entropy(logits, labels, 0, /*check_labels=*/false);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"grad", &grad}, {"lse", &lse}}) {
    check_float("vlmzoo::cross_entropy_backward", name, *t);
    TORCH_CHECK_VALUE(t->sym_sizes() == labels.sym_sizes(), "vlmzoo::cross_entropy_backward: ", name, " has shape ",
                      t->sym_sizes(), " but labels have shape ", labels.sym_sizes());
  }
}

void check_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "vlmzoo::rope";
  check_float(op, "q", q);
  check_float(op, "cos", cos);
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4, op, ": q and k must be [batch, heads, tokens, head_dim], got ",
              q.sym_sizes(), " and ", k.sym_sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), op, ": k is ", k.scalar_type(), " but q is ", q.scalar_type());
  TORCH_CHECK(k.sym_size(0) == q.sym_size(0) && k.sym_size(2) == q.sym_size(2) && k.sym_size(3) == q.sym_size(3),
              op, ": k ", k.sym_sizes(), " must match q ", q.sym_sizes(), " in batch, tokens and head_dim");
  TORCH_CHECK(cos.dim() == 3 && cos.sym_sizes() == sin.sym_sizes(), op,
              ": cos and sin must both be [batch, tokens, rotary_dim], got ", cos.sym_sizes(), " and ",
              sin.sym_sizes());
  TORCH_CHECK(cos.sym_size(0) == q.sym_size(0) || cos.sym_size(0) == 1, op, ": cos batch ", cos.sym_size(0),
              " must be 1 or q's batch ", q.sym_size(0));
  TORCH_CHECK(cos.sym_size(1) == q.sym_size(2), op, ": cos has ", cos.sym_size(1), " tokens but q has ",
              q.sym_size(2));
  TORCH_CHECK(cos.sym_size(2) <= q.sym_size(3) && cos.sym_size(2) % 2 == 0, op, ": rotary_dim ", cos.sym_size(2),
              " must be even and at most head_dim ", q.sym_size(3));
}

void check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& allowed) {
  const char* op = "vlmzoo::attention";
  check_float(op, "q", q);
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
              ": q, k, v must be [batch, heads, tokens, head_dim], got ", q.sym_sizes(), ", ", k.sym_sizes(), ", ",
              v.sym_sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(k.sym_sizes() == v.sym_sizes(), op, ": k ", k.sym_sizes(), " and v ", v.sym_sizes(), " differ");
  TORCH_CHECK(k.sym_size(0) == q.sym_size(0) && k.sym_size(3) == q.sym_size(3), op, ": k ", k.sym_sizes(),
              " must match q ", q.sym_sizes(), " in batch and head_dim");
  TORCH_CHECK(k.sym_size(1) > 0 && q.sym_size(1) % k.sym_size(1) == 0, op, ": kv heads ", k.sym_size(1),
              " must divide query heads ", q.sym_size(1));
  if (allowed.has_value()) {
    TORCH_CHECK(allowed->scalar_type() == at::kBool, op, ": allowed must be bool (true = may attend), got ",
                allowed->scalar_type());
    TORCH_CHECK(allowed->dim() <= 4, op, ": allowed must broadcast to [batch, heads, q_tokens, k_tokens]");
    c10::SymDimVector target{q.sym_size(0), q.sym_size(1), q.sym_size(2), k.sym_size(2)};
    for (int64_t i = 1; i <= allowed->dim(); ++i) {
      const auto& n = allowed->sym_size(-i);
      TORCH_CHECK(n == 1 || n == target[4 - i], op, ": allowed ", allowed->sym_sizes(),
                  " does not broadcast to [batch, heads, q_tokens, k_tokens] = ", c10::SymIntArrayRef(target));
    }
  }
}

void check_attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& out, const std::optional<at::Tensor>& allowed) {
  check_attention(q, k, v, allowed);
  const char* op = "vlmzoo::attention_backward";
  for (const auto* t : {&grad, &out}) {
    TORCH_CHECK(t->sym_sizes() == q.sym_sizes(), op, ": grad and out must be shaped as q ", q.sym_sizes(), ", got ",
                t->sym_sizes());
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), op, ": grad and out must be ", q.scalar_type(), ", got ",
                t->scalar_type());
  }
}

void check_multiway(const char* op, const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                    const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                    const std::optional<at::Tensor>& bias_b, bool linear) {
  check_float(op, "x", x);
  TORCH_CHECK(x.dim() == 3, op, ": x must be [batch, tokens, features], got ", x.sym_sizes());
  TORCH_CHECK(split >= 0 && x.sym_size(1) >= split, op, ": split ", split, " must lie in [0, tokens = ",
              x.sym_size(1), "]");
  const auto& features = x.sym_size(2);
  for (const auto* w : {&weight_a, &weight_b}) {
    if (linear) {
      TORCH_CHECK(w->dim() == 2 && w->sym_size(1) == features, op, ": weights must be [out, ", features,
                  "], got ", w->sym_sizes());
      TORCH_CHECK(w->sym_size(0) == weight_a.sym_size(0), op, ": weight_a and weight_b differ in out features");
    } else {
      check_vector(op, "weight", *w, features);
    }
  }
  auto out = linear ? weight_a.sym_size(0) : features;
  if (bias_a.has_value()) check_vector(op, "bias_a", *bias_a, out);
  if (bias_b.has_value()) check_vector(op, "bias_b", *bias_b, out);
}

double attention_scale(const at::Tensor& q, std::optional<double> scale) {
  if (scale.has_value()) return *scale;
  return 1.0 / std::sqrt(static_cast<double>(q.sym_size(-1).guard_int(__FILE__, __LINE__)));
}

at::Tensor empty_contiguous(const at::Tensor& like, at::ScalarType dtype) {
  return at::empty_symint(like.sym_sizes(), like.options().dtype(dtype));
}

}  // namespace vlmzoo::ops
