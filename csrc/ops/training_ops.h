#pragma once
// The ops a training step adds (schemas: registration.cpp): the activations' and rms_norm's gradients
// in one pass each, and the cross-entropy over the vocabulary. Their entry points (through the
// dispatcher), argument checks (every backend) and plain-ATen references, in one place so the
// headers every kernel includes stay as they are.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace vlmzoo::ops {

// ---- entry points (ops.cpp)
// rms_norm's gradients at x (add_rms_norm: at the sum) for grad = dL/d(output): (dx + grad_sum, dweight).
std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& weight, double eps,
                                                     const std::optional<at::Tensor>& grad_sum);
// (dx, dup) of act(x (+ bias)) (* up); dup undefined without up.
std::tuple<at::Tensor, at::Tensor> act_backward(const at::Tensor& grad, const at::Tensor& x,
                                                const std::optional<at::Tensor>& bias,
                                                const std::optional<at::Tensor>& up, const std::string& act);
// logits [..., V], labels [...] -> (loss, lse) [...]; dlogits from cross_entropy_backward.
std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                 int64_t ignore_index);
at::Tensor cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                  const at::Tensor& lse, int64_t ignore_index);

// ---- checks (checks.cpp)
// rms_norm_backward: grad and grad_sum (if given) shaped as x; weight [D].
void check_rms_norm_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& grad_sum);
// act_backward: grad and up (if given) shaped and typed as x; bias: [D].
void check_act_backward(const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                        const std::optional<at::Tensor>& up);
// logits: [..., V] floating; labels: [...] int64, each in [0, V) or ignore_index (the values are checked
// only where check_labels is true: not on Meta). The backward's grad and lse: shaped as labels.
void check_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index, bool check_labels);
void check_cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                  const at::Tensor& lse);

// ---- references (reference_training.cpp)
// (dx (+ grad_sum) in x's dtype, dweight in the weight's); float32 math, the forward's rounding of
// x * r passed straight through.
std::tuple<at::Tensor, at::Tensor> reference_rms_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                                               const at::Tensor& weight, double eps,
                                                               const std::optional<at::Tensor>& grad_sum);
// d act(x) / dx, elementwise, in x's dtype.
at::Tensor reference_activation_derivative(const at::Tensor& x, const std::string& act);
// Gradients of act(x (+ bias)) (* up) for grad = dL/d(output): (dx, dup), dup undefined without up.
// float32 math (as the forward), cast back to x's dtype.
std::tuple<at::Tensor, at::Tensor> reference_act_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& bias,
                                                          const std::optional<at::Tensor>& up, const std::string& act);
// logits: [..., V]; labels: [...]. Returns (loss, lse) [...] in float32 (float64 for float64 logits):
// loss = lse - logits[label], lse = logsumexp(logits); both 0 where label == ignore_index.
std::tuple<at::Tensor, at::Tensor> reference_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                           int64_t ignore_index);
// dlogits [..., V] in logits' dtype = grad * (softmax(logits) - one_hot(label)), 0 on ignored rows.
at::Tensor reference_cross_entropy_backward(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels,
                                            const at::Tensor& lse, int64_t ignore_index);

}  // namespace vlmzoo::ops
