#pragma once
// C++ entry points to the fused ops: each goes through the dispatcher (so CPU, CUDA, Meta and
// Autograd kernels are picked as for torch.ops.vlmzoo.*). Shapes and semantics: see registration.cpp.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

namespace vlmzoo::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                const at::Tensor& weight, double eps);
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      double eps);
std::tuple<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                  const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                                  double eps);
at::Tensor bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, const std::string& act);
at::Tensor gated_act(const at::Tensor& gate, const at::Tensor& up, const std::string& act);
std::tuple<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                        const at::Tensor& sin);
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& allowed, std::optional<double> scale);
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out,
                                                                  const std::optional<at::Tensor>& allowed,
                                                                  double scale);
at::Tensor multiway_linear(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                           const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                           const std::optional<at::Tensor>& bias_b);
at::Tensor multiway_layer_norm(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                               const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                               const std::optional<at::Tensor>& bias_b, double eps);
// Linear layers on packed weights (formats: ops/linear_formats.h, which also packs and unpacks them).
// x: [..., K] -> [..., out_features] in x's dtype.
at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& packed_weight, int64_t out_features,
                       const std::optional<at::Tensor>& bias);
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& packed_weight, const at::Tensor& scales,
                       const at::Tensor& col_sums, const std::optional<at::Tensor>& bias);

}  // namespace vlmzoo::ops
