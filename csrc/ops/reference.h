#pragma once
// Plain-ATen references for every fused op: the definitions the kernels are tested against, the
// `fused=false` path of the blocks, and the `vlmzoo::<op>_reference` ops (CompositeImplicitAutograd,
// so their gradients come from ATen's autograd).
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>

namespace vlmzoo::ops {

// x: [..., D]; weight: [D]. float32 math, cast back to x's dtype, then weight * (Llama convention).
at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// Returns (x + residual, rms_norm(x + residual)). x and residual may differ in dtype: the sum is in
// their promoted dtype (ATen's x + residual), the normed output in the sum's dtype promoted with the
// weight's (as rms_norm). The fused kernels follow the same rule (checks.h, check_add_rms_norm).
std::tuple<at::Tensor, at::Tensor> reference_add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                                          const at::Tensor& weight, double eps);
at::Tensor reference_layer_norm(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, double eps);
std::tuple<at::Tensor, at::Tensor> reference_add_layer_norm(const at::Tensor& x, const at::Tensor& residual,
                                                            const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias, double eps);

// act in: gelu, gelu_tanh, quick_gelu, relu, relu2, silu.
at::Tensor reference_activation(const at::Tensor& x, const std::string& act);
// act(x + bias); bias: [D] broadcast over x's last dimension, or none.
at::Tensor reference_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, const std::string& act);
// act(gate) * up.
at::Tensor reference_gated_act(const at::Tensor& gate, const at::Tensor& up, const std::string& act);

// q: [B, H, T, d], k: [B, Hk, T, d]; cos/sin: [B or 1, T, r], r <= d even. rotate_half on the first r channels.
std::tuple<at::Tensor, at::Tensor> reference_rope(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                  const at::Tensor& sin);

// q: [B, H, Tq, d]; k, v: [B, Hkv, Tk, d]; allowed: bool broadcastable to [B, H, Tq, Tk], true = may attend.
// Explicit scores, softmax in (at least) float32; a row with nothing to attend to yields zeros.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& allowed, std::optional<double> scale);
// Gradients (dq, dk, dv) of attention for grad = dL/d(out): recomputes the [B, H, Tq, Tk] probabilities
// and applies the softmax gradient, in (at least) float32; GQA heads sum onto their kv head. `out`
// (the forward's output) is not needed here; it is in the signature to match vlmzoo::attention_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> reference_attention_backward(const at::Tensor& grad,
                                                                            const at::Tensor& q, const at::Tensor& k,
                                                                            const at::Tensor& v, const at::Tensor& out,
                                                                            const std::optional<at::Tensor>& allowed,
                                                                            double scale);

// x: [B, T, D]; tokens [:split] use (weight_a, bias_a), tokens [split:] use (weight_b, bias_b).
at::Tensor reference_multiway_linear(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                     const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                     const std::optional<at::Tensor>& bias_b);
at::Tensor reference_multiway_layer_norm(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                         const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                         const std::optional<at::Tensor>& bias_b, double eps);

// x: [..., K]; packed: pack_linear_bf16 of an [out_features, K] weight. F.linear(x, w.float(), bias) in
// float32 (float64 for float64 x), cast to x's dtype.
at::Tensor reference_linear_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                                 const std::optional<at::Tensor>& bias);
// x: [..., K]; packed, scales, col_sums: quantize_linear_int8 of an [N, K] weight. Each token quantised
// to uint8 with its own scale and zero point (quantize_rows_uint8), the integer dot products
// (q_x - zero_point) . q_w computed exactly (float64), then times scale_x * scale_w, plus bias, in
// float32; cast to x's dtype. col_sums is not read: the integers are formed directly.
at::Tensor reference_linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                 const at::Tensor& col_sums, const std::optional<at::Tensor>& bias);

}  // namespace vlmzoo::ops
