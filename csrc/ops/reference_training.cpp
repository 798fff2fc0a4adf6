// References of the ops only training needs: activation gradients and the cross-entropy.
#include "ops/reference.h"

#include <cmath>

#include "ops/checks.h"
#include "ops/training_ops.h"

namespace vlmzoo::ops {

std::tuple<at::Tensor, at::Tensor> reference_rms_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                               const at::Tensor& weight, double eps,
                                                               const std::optional<at::Tensor>& grad_sum) {
  const auto type = at::promote_types(x.scalar_type(), at::kFloat);
  auto xf = x.to(type);
  auto r = at::rsqrt(xf.pow(2).mean(-1, true) + eps);
  auto x_hat = xf * r;
  auto g = grad.to(type);
  auto leading = g.dim() == 1 ? g : g.flatten(0, g.dim() - 2);
  auto rounded = x_hat.to(x.scalar_type()).to(type);
  auto dweight = (leading * (rounded.dim() == 1 ? rounded : rounded.flatten(0, rounded.dim() - 2))).sum(0);
  if (g.dim() == 1) dweight = g * rounded;
  auto g_hat = g * weight.to(type);
  auto dx = r * (g_hat - x_hat * (g_hat * x_hat).mean(-1, true));
  if (grad_sum.has_value()) dx = dx + grad_sum->to(type);
  return {dx.to(x.scalar_type()), dweight.to(weight.scalar_type())};
}

at::Tensor reference_activation_derivative(const at::Tensor& x, const std::string& act) {
  switch (parse_act(act)) {
    case Act::gelu:
      return 0.5 * (1 + at::erf(x * M_SQRT1_2)) + x * at::exp(-0.5 * x * x) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
    case Act::gelu_tanh: {
      const double k = M_2_SQRTPI * M_SQRT1_2, c = 0.044715;
      auto t = at::tanh(k * (x + c * x.pow(3)));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x);
    }
    case Act::quick_gelu: {
      auto s = at::sigmoid(1.702 * x);
      return s + 1.702 * x * s * (1 - s);
    }
    case Act::relu: return (x > 0).to(x.scalar_type());
    case Act::relu2: return 2 * at::relu(x);
    case Act::silu: {
      auto s = at::sigmoid(x);
      return s * (1 + x * (1 - s));
    }
  }
  TORCH_CHECK(false, "unreachable");
}

std::tuple<at::Tensor, at::Tensor> reference_act_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& bias,
                                                          const std::optional<at::Tensor>& up, const std::string& act) {
  const auto type = at::promote_types(x.scalar_type(), at::kFloat);
  at::Tensor a = x.to(type);
  if (bias.has_value()) a = a + bias->to(type);
  auto g = grad.to(type);
  auto slope = reference_activation_derivative(a, act);
  if (!up.has_value()) return {(g * slope).to(x.scalar_type()), at::Tensor()};
  return {(g * up->to(type) * slope).to(x.scalar_type()), (g * reference_activation(a, act)).to(x.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> reference_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                           int64_t ignore_index) {
  const auto type = at::promote_types(logits.scalar_type(), at::kFloat);
  auto x = logits.to(type);
  auto ignored = labels == ignore_index;
  auto lse = at::logsumexp(x, -1);
  auto picked = x.gather(-1, labels.masked_fill(ignored, 0).unsqueeze(-1)).squeeze(-1);
  return {(lse - picked).masked_fill(ignored, 0), lse.masked_fill(ignored, 0)};
}

at::Tensor reference_cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                            const at::Tensor& lse, int64_t ignore_index) {
  const auto type = at::promote_types(logits.scalar_type(), at::kFloat);
  auto ignored = labels == ignore_index;
  auto softmax = (logits.to(type) - lse.to(type).unsqueeze(-1)).exp();
  auto one_hot = at::zeros_like(softmax).scatter_(-1, labels.masked_fill(ignored, 0).unsqueeze(-1), 1.0);
  auto g = grad.to(type).masked_fill(ignored, 0).unsqueeze(-1);
  return (g * (softmax - one_hot)).to(logits.scalar_type());
}

}  // namespace vlmzoo::ops
