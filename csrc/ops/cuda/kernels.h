#pragma once
// The CUDA kernels' host API: plain pointers, strides and sizes, no torch types, so the kernels
// compile with nvcc alone. cuda_bridge/ maps at::Tensor onto these structs. Every function
// launches on `stream` (a cudaStream_t) and returns the launch's cudaError_t (0 = success).
#include <cstdint>

namespace vlmzoo::cuda {

enum class DType : int { f32, f16, bf16 };
// Same order as vlmzoo::ops::Act.
enum class Act : int { gelu, gelu_tanh, quick_gelu, relu, relu2, silu };

// Norm over the rows of x [rows, D] (row stride x_stride, unit stride along D), computed in float.
// Rows whose token index (row % tokens) is < split use the _a parameters, the others the _b ones.
struct NormArgs {
  DType dtype, out_dtype;  // out_dtype: dtype, or f32 (rms_norm with a float32 weight, or a mixed sum)
  const void* x;
  int64_t x_stride;
  const void* residual;  // null: no residual add
  int64_t residual_stride;
  // rms_norm only: a residual of another dtype than x; the sum (and out_dtype) is then f32.
  DType residual_dtype;
  void* sum;  // [rows, D], written when residual is given (dtype, or f32 when residual_dtype differs)
  void* y;    // [rows, D]
  const float *weight_a, *bias_a, *weight_b, *bias_b;  // [D]; biases may be null
  int64_t rows, D, tokens, split;
  float eps;
};
int rms_norm(const NormArgs& args, void* stream);
int layer_norm(const NormArgs& args, void* stream);

// out[row] = act(a[row] + bias) (* b[row] when b is given); out: [rows, D] contiguous.
struct ActArgs {
  DType dtype;
  const void* a;
  int64_t a_stride;
  const void* b;  // null: bias_act
  int64_t b_stride;
  const float* bias;  // [D] or null
  void* out;
  int64_t rows, D;
  Act act;
};
int activation(const ActArgs& args, void* stream);

// q: [B, Hq, T, d], k: [B, Hk, T, d] (strides for batch, head, token; unit stride along d);
// cos/sin float [B or 1, T, r] contiguous (cos_batch_stride 0 when broadcast); outputs contiguous.
struct RopeArgs {
  DType dtype;
  const void *q, *k;
  int64_t q_strides[3], k_strides[3];
  void *q_out, *k_out;
  const float *cos, *sin;
  int64_t cos_batch_stride;
  int64_t B, Hq, Hk, T, d, r;
};
int rope(const RopeArgs& args, void* stream);

// q: [B, H, Tq, d]; k, v: [B, Hkv, Tk, d] (strides for batch, head, token; unit stride along d);
// mask: bool with strides for (batch, head, query, key) (0 where broadcast), or null;
// out: [B, H, Tq, d] contiguous. splits > 1 splits the keys (decode) and needs a float workspace of
// attention_workspace_floats(...) elements.
struct AttentionArgs {
  DType dtype;
  const void *q, *k, *v;
  int64_t q_strides[3], k_strides[3], v_strides[3];
  const bool* mask;
  int64_t mask_strides[4];
  void* out;
  float* workspace;
  int64_t B, H, Hkv, Tq, Tk, d;
  float scale;
  int splits;
};
int attention_splits(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int sm_count);
int64_t attention_workspace_floats(int64_t B, int64_t H, int64_t Tq, int64_t d, int splits);
int attention(const AttentionArgs& args, void* stream);
constexpr int64_t kAttentionMaxHeadDim = 256;

}  // namespace vlmzoo::cuda
