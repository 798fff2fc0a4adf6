#pragma once
// The CPU kernels (AVX-512 through at::vec, see vec.h). Arguments are already checked by the caller
// (cpu/register.cpp); every result is a new contiguous tensor.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ops/checks.h"

namespace vlmzoo::ops::cpu {

// Whether this CPU runs the kernels (AVX-512 F/BW/VL/DQ); when not, register.cpp uses the references.
bool kernels_supported();

// residual may be undefined (plain norm); then the first result is undefined too.
std::tuple<at::Tensor, at::Tensor> rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                            const at::Tensor& weight, double eps);
// Rows whose token index (row % tokens) is < split use (weight_a, bias_a), the others (weight_b, bias_b).
// A plain layer norm is split == tokens.
std::tuple<at::Tensor, at::Tensor> layer_norm(const at::Tensor& x, const at::Tensor& residual, int64_t tokens,
                                              int64_t split, const at::Tensor& weight_a,
                                              const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                              const std::optional<at::Tensor>& bias_b, double eps);
at::Tensor bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, Act act);
at::Tensor gated_act(const at::Tensor& gate, const at::Tensor& up, Act act);
std::tuple<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                        const at::Tensor& sin);
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& allowed, double scale);
// (dq, dk, dv) of attention, given grad = dL/d(out) and the forward's out; tiled (no [Tq, Tk] matrix),
// float32 accumulation (float64 for float64).
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out,
                                                                  const std::optional<at::Tensor>& allowed,
                                                                  double scale);

}  // namespace vlmzoo::ops::cpu
