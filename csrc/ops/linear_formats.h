#pragma once
// Packed weight formats of the linear ops (vlmzoo::linear_bf16, vlmzoo::linear_int8): a [N, K] weight
// (N output features, K input features) is packed once, at load or when its format changes, into
// column panels that the CPU kernels stream front to back:
//
//   panels(w, C, G) = pad w to [ceil(N / C) * C, ceil(K / G) * G] with zeros
//                     -> view [ceil(N / C), C, ceil(K / G), G] -> permute (0, 2, 1, 3), contiguous
//
// so panel p holds output columns [p * C, p * C + C), and each group of G consecutive input features
// of one column is one G-element word (the "VNNI" order: one 512-bit load is 16 columns x G features).
//   bf16: C = 64, G = 2 (bfloat16; a 32-bit word is a feature pair, widened to two floats by a shift and a mask)
//   int8: C = 64, G = 4 (int8, per-output-channel symmetric; a word is the 4 bytes vpdpbusd multiplies)
// Everything here is plain ATen, so packing runs on every backend and is differentiable where it can be.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace vlmzoo::ops {

constexpr int64_t kBf16PanelCols = 64, kBf16Group = 2;
constexpr int64_t kInt8PanelCols = 64, kInt8Group = 4;
// int8 dot products accumulate in int32: K * 255 * 127 must stay below 2^31.
constexpr int64_t kInt8MaxInFeatures = 65536;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// linear_bf16 on a CPU with AMX-BF16 tiles: more than kBf16ExactRows rows (prefill) multiply on the tiles,
// the activations rounded to bfloat16 once (products exact, float32 accumulation), as oneDNN's bf16 matmul
// does: 3-4x the float32 FMA rate there. Up to kBf16ExactRows rows (decode), without AMX, or with the
// switch off, the weights are widened and the arithmetic is float32 (F.linear(x, w.float()) up to order).
constexpr int64_t kBf16ExactRows = 32;
void set_bf16_amx(bool enabled);  // on by default; VLMZOO_BF16_AMX=0 in the environment starts it off
bool bf16_amx();                  // the switch is on and oneDNN's brgemm has AMX-BF16 on this CPU

// w: [N, K] -> [ceil(N / cols), ceil(K / group), cols, group] in w's dtype (see the formula above).
at::Tensor pack_panels(const at::Tensor& w, int64_t cols, int64_t group);
// The inverse: packed -> [out_features, in_features].
at::Tensor unpack_panels(const at::Tensor& packed, int64_t out_features, int64_t in_features);

// weight: [N, K] floating -> bfloat16 panels (rounded to nearest even).
at::Tensor pack_linear_bf16(const at::Tensor& weight);
// -> [out_features, in_features] bfloat16.
at::Tensor unpack_linear_bf16(const at::Tensor& packed, int64_t out_features, int64_t in_features);

// weight: [N, K] floating -> (packed int8 panels, scales [N] float32, col_sums [N] int32): per output
// channel n, scale = max_k |w[n, k]| / 127 (1 for an all-zero row), q = clamp(round(w / scale), -127, 127),
// col_sum = sum_k q[n, k] (what linear_int8 subtracts times each token's zero point).
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_linear_int8(const at::Tensor& weight);
// -> q * scale: [N, in_features] float32.
at::Tensor dequantize_linear_int8(const at::Tensor& packed, const at::Tensor& scales, int64_t in_features);

// Per-token activation quantisation of linear_int8, written once for the reference (the kernel performs
// the same float32 operations in the same order, so both give identical integers). For each row of x
// ([M, K] float32): hi = max(max_k x, 0), lo = min(min_k x, 0), scale = (hi - lo) / 255 (1 if 0),
// inv = 1 / scale, zero_point = round(-lo * inv), q = clamp(round(x * inv) + zero_point, 0, 255);
// round is to nearest even. Returns (q as float32 [M, K], scale [M], zero_point as float32 [M]).
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_rows_uint8(const at::Tensor& x);

// Argument checks shared by every backend (sizes read as SymInts, so Meta can run them).
// x: [..., K]; packed from pack_linear_bf16 of a [out_features, K] weight; bias: [out_features] or none.
void check_linear_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                       const std::optional<at::Tensor>& bias);
// x: [..., K]; packed, scales, col_sums from quantize_linear_int8 of an [N, K] weight; bias: [N] or none.
void check_linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const at::Tensor& col_sums, const std::optional<at::Tensor>& bias);
// x's shape with the last dimension replaced by out_features.
c10::SymDimVector linear_out_shape(const at::Tensor& x, const c10::SymInt& out_features);

}  // namespace vlmzoo::ops
