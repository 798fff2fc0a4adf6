// rms_norm and layer_norm (with optional residual add and per-token weights) on CUDA: one block per
// row, reductions in float, the row re-read from L1/L2 for the output pass.
#include "ops/cuda/common.cuh"

namespace vlmzoo::cuda {
namespace {

constexpr int kThreads = 256;

// Returns x[j] (or round_S(x[j] + residual[j]), stored to sum) for this thread's elements.
// T: x's type, R: residual's, S: the sum's.
template <typename T, typename R = T, typename S = T>
__device__ __forceinline__ float load_input(const NormArgs& a, int64_t row, int64_t j) {
  const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
  if (a.residual == nullptr) return to_float(x[j]);
  const R* r = static_cast<const R*>(a.residual) + row * a.residual_stride;
  const S s = from_float<S>(to_float(x[j]) + to_float(r[j]));
  static_cast<S*>(a.sum)[row * a.D + j] = s;
  return to_float(s);
}

template <typename T, typename S = T>
__device__ __forceinline__ float reload_input(const NormArgs& a, int64_t row, int64_t j) {
  if (a.residual == nullptr) return to_float(static_cast<const T*>(a.x)[row * a.x_stride + j]);
  return to_float(static_cast<const S*>(a.sum)[row * a.D + j]);
}

// y = round_S(x * rsqrt(mean(x^2) + eps)) * w (the Llama convention), S the type of x (or of the sum).
template <typename T, typename R, typename S, typename O>
__global__ void rms_norm_kernel(NormArgs a) {
  const int64_t row = blockIdx.x;
  float squares = 0.f;
  for (int64_t j = threadIdx.x; j < a.D; j += blockDim.x) {
    const float v = load_input<T, R, S>(a, row, j);
    squares += v * v;
  }
  const float r = rsqrtf(block_sum(squares) / static_cast<float>(a.D) + a.eps);
  const float* w = (row % a.tokens) < a.split ? a.weight_a : a.weight_b;
  O* y = static_cast<O*>(a.y) + row * a.D;
  for (int64_t j = threadIdx.x; j < a.D; j += blockDim.x)
    y[j] = from_float<O>(round_to<S>(reload_input<T, S>(a, row, j) * r) * w[j]);
}

template <typename T>
__global__ void layer_norm_kernel(NormArgs a) {
  const int64_t row = blockIdx.x;
  float total = 0.f;
  for (int64_t j = threadIdx.x; j < a.D; j += blockDim.x) total += load_input<T>(a, row, j);
  const float mean = block_sum(total) / static_cast<float>(a.D);
  float squares = 0.f;
  for (int64_t j = threadIdx.x; j < a.D; j += blockDim.x) {
    const float c = reload_input<T>(a, row, j) - mean;
    squares += c * c;
  }
  const float rstd = rsqrtf(block_sum(squares) / static_cast<float>(a.D) + a.eps);
  const bool first = (row % a.tokens) < a.split;
  const float* w = first ? a.weight_a : a.weight_b;
  const float* b = first ? a.bias_a : a.bias_b;
  T* y = static_cast<T*>(a.y) + row * a.D;
  for (int64_t j = threadIdx.x; j < a.D; j += blockDim.x) {
    const float normed = (reload_input<T>(a, row, j) - mean) * rstd * w[j];
    y[j] = from_float<T>(b != nullptr ? normed + b[j] : normed);
  }
}

}  // namespace

int rms_norm(const NormArgs& args, void* stream) {
  if (args.rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  if (args.residual != nullptr && args.residual_dtype != args.dtype) {  // mixed: sum and output in float
    VLMZOO_CUDA_DISPATCH(args.dtype, {
      using X = T;
      VLMZOO_CUDA_DISPATCH(args.residual_dtype, rms_norm_kernel<X, T, float, float><<<args.rows, kThreads, 0, s>>>(args));
    });
    return static_cast<int>(cudaGetLastError());
  }
  VLMZOO_CUDA_DISPATCH(args.dtype, {
    if (args.out_dtype == args.dtype) rms_norm_kernel<T, T, T, T><<<args.rows, kThreads, 0, s>>>(args);
    else rms_norm_kernel<T, T, T, float><<<args.rows, kThreads, 0, s>>>(args);
  });
  return static_cast<int>(cudaGetLastError());
}

int layer_norm(const NormArgs& args, void* stream) {
  if (args.rows == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  VLMZOO_CUDA_DISPATCH(args.dtype, layer_norm_kernel<T><<<args.rows, kThreads, 0, s>>>(args));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace vlmzoo::cuda
