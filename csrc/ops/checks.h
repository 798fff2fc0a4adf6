#pragma once
// Argument checks and output allocation shared by every backend (CPU, CUDA, Meta), so an op fails
// with the same message wherever it runs. Sizes are read as SymInts: Meta runs under fake tensors.
#include <ATen/ATen.h>

#include <optional>

namespace vlmzoo::ops {

enum class Act { gelu, gelu_tanh, quick_gelu, relu, relu2, silu };
Act parse_act(c10::string_view act);

// x: [..., D]; weight (and bias): [D]; residual (if given): shaped and typed as x.
void check_norm(const char* op, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                const at::Tensor* residual = nullptr);
// rms_norm's result type: x's dtype promoted with weight's (weight * normed, as the Llama reference).
at::ScalarType rms_norm_out_type(const at::Tensor& x, const at::Tensor& weight);
at::ScalarType rms_norm_out_type(at::ScalarType x, const at::Tensor& weight);
// add_rms_norm's x and residual may differ in floating dtype (autocast: a bfloat16 branch onto a float32
// residual stream). The rule, as the reference (x + residual, then rms_norm of the sum):
//   sum:    x + residual in promote_types(x, residual), computed in (at least) float32;
//   normed: rms_norm(sum), in rms_norm_out_type(sum's dtype, weight).
void check_add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight);
inline at::ScalarType add_rms_norm_sum_type(const at::Tensor& x, const at::Tensor& residual) {
  return at::promote_types(x.scalar_type(), residual.scalar_type());
}
void check_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias);
void check_gated_act(const at::Tensor& gate, const at::Tensor& up);
void check_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin);
void check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& allowed);
// check_attention, and grad and out shaped and typed as q.
void check_attention_backward(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& out, const std::optional<at::Tensor>& allowed);
// x: [B, T, D]; 0 <= split <= T; weights [N, D] (linear) or [D] (layer_norm).
void check_multiway(const char* op, const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                    const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                    const std::optional<at::Tensor>& bias_b, bool linear);

// x viewed as [rows, D] with unit stride along D (concrete sizes: kernels only); a copy only when no
// such view exists.
inline at::Tensor as_rows(const at::Tensor& x) {
  auto rows = x.reshape({-1, x.size(-1)});
  return rows.stride(1) == 1 ? rows : rows.contiguous();
}

double attention_scale(const at::Tensor& q, std::optional<double> scale);
// Outputs are always contiguous, on every backend.
at::Tensor empty_contiguous(const at::Tensor& like, at::ScalarType dtype);
inline at::Tensor empty_contiguous(const at::Tensor& like) { return empty_contiguous(like, like.scalar_type()); }

}  // namespace vlmzoo::ops
