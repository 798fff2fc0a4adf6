// rope on CUDA: q and k in one launch, one thread per output element.
#include "ops/cuda/common.cuh"

namespace vlmzoo::cuda {
namespace {

template <typename T>
__global__ void rope_kernel(RopeArgs a) {
  const int64_t q_elems = a.B * a.Hq * a.T * a.d, total = q_elems + a.B * a.Hk * a.T * a.d;
  const int64_t h = a.r / 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool is_q = i < q_elems;
    const int64_t local = is_q ? i : i - q_elems, heads = is_q ? a.Hq : a.Hk;
    const int64_t c = local % a.d, t = (local / a.d) % a.T, head = (local / (a.d * a.T)) % heads;
    const int64_t b = local / (a.d * a.T * heads);
    const int64_t* st = is_q ? a.q_strides : a.k_strides;
    const T* x = static_cast<const T*>(is_q ? a.q : a.k) + b * st[0] + head * st[1] + t * st[2];
    const float* cs = a.cos + b * a.cos_batch_stride + t * a.r;
    const float* sn = a.sin + b * a.cos_batch_stride + t * a.r;
    float out;
    if (c < h) out = to_float(x[c]) * cs[c] - to_float(x[c + h]) * sn[c];
    else if (c < a.r) out = to_float(x[c]) * cs[c] + to_float(x[c - h]) * sn[c];
    else out = to_float(x[c]);
    static_cast<T*>(is_q ? a.q_out : a.k_out)[local] = from_float<T>(out);
  }
}

}  // namespace

int rope(const RopeArgs& args, void* stream) {
  constexpr int threads = 256;
  const int64_t total = (args.B * args.Hq + args.B * args.Hk) * args.T * args.d;
  if (total == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  VLMZOO_CUDA_DISPATCH(args.dtype, rope_kernel<T><<<blocks_for(total, threads), threads, 0, s>>>(args));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace vlmzoo::cuda
