// bias_act and gated_act on CUDA: one thread per element, computed in float, rounded once.
#include "ops/cuda/common.cuh"

namespace vlmzoo::cuda {
namespace {

__device__ __forceinline__ float apply(Act act, float x) {
  switch (act) {
    case Act::gelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case Act::gelu_tanh: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + tanhf(inner));
    }
    case Act::quick_gelu: return x / (1.f + __expf(-1.702f * x));
    case Act::relu: return fmaxf(x, 0.f);
    case Act::relu2: {
      const float r = fmaxf(x, 0.f);
      return r * r;
    }
    case Act::silu: return x / (1.f + __expf(-x));
  }
  return x;
}

template <typename T>
__global__ void activation_kernel(ActArgs a) {
  const int64_t total = a.rows * a.D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / a.D, j = i % a.D;
    float v = to_float(static_cast<const T*>(a.a)[row * a.a_stride + j]);
    if (a.bias != nullptr) v += a.bias[j];
    v = apply(a.act, v);
    if (a.b != nullptr) v *= to_float(static_cast<const T*>(a.b)[row * a.b_stride + j]);
    static_cast<T*>(a.out)[i] = from_float<T>(v);
  }
}

}  // namespace

int activation(const ActArgs& args, void* stream) {
  constexpr int threads = 256;
  if (args.rows * args.D == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  VLMZOO_CUDA_DISPATCH(args.dtype,
                       activation_kernel<T><<<blocks_for(args.rows * args.D, threads), threads, 0, s>>>(args));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace vlmzoo::cuda
