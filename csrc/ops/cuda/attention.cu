// attention forward on CUDA with online softmax: each warp owns one query row, the four warps of a
// block share key/value tiles in shared memory, and no score matrix is ever stored. For decode
// (few rows, long cache) the keys are split over blockIdx.z and a second kernel merges the parts.
#include <cmath>

#include "ops/cuda/common.cuh"

namespace vlmzoo::cuda {
namespace {

constexpr int kWarps = 4;

// DMAX: head dims up to DMAX (a multiple of 32); KT: keys per shared-memory tile (<= 32).
template <typename T, int DMAX, int KT>
__global__ void __launch_bounds__(kWarps * 32) attention_kernel(AttentionArgs a) {
  constexpr int kPerLane = DMAX / 32;
  __shared__ float k_tile[KT][DMAX + 1];  // +1: lanes reading different keys hit different banks
  __shared__ float v_tile[KT][DMAX];
  __shared__ float q_rows[kWarps][DMAX];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y / a.H, h = blockIdx.y % a.H, hkv = h / (a.H / a.Hkv);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = i < a.Tq;
  const int64_t split_len = (a.Tk + a.splits - 1) / a.splits;
  const int64_t key_begin = blockIdx.z * split_len;
  const int64_t key_end = key_begin + split_len < a.Tk ? key_begin + split_len : a.Tk;

  const T* q = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1] + (active ? i : 0) * a.q_strides[2];
  for (int c = lane; c < DMAX; c += 32) q_rows[warp][c] = (active && c < a.d) ? to_float(q[c]) * a.scale : 0.f;
  const bool* mask_row = a.mask == nullptr ? nullptr
                                           : a.mask + b * a.mask_strides[0] + h * a.mask_strides[1] +
                                                 (active ? i : 0) * a.mask_strides[2];
  const T* k_head = static_cast<const T*>(a.k) + b * a.k_strides[0] + hkv * a.k_strides[1];
  const T* v_head = static_cast<const T*>(a.v) + b * a.v_strides[0] + hkv * a.v_strides[1];

  float m = -INFINITY, l = 0.f, acc[kPerLane];
  for (int t = 0; t < kPerLane; ++t) acc[t] = 0.f;
  for (int64_t j0 = key_begin; j0 < key_end; j0 += KT) {
    __syncthreads();  // the previous tile is consumed (and q_rows is written before the first use)
    for (int idx = threadIdx.x; idx < KT * DMAX; idx += blockDim.x) {
      const int jj = idx / DMAX, c = idx % DMAX;
      const int64_t key = j0 + jj;
      const bool in = key < key_end && c < a.d;
      k_tile[jj][c] = in ? to_float(k_head[key * a.k_strides[2] + c]) : 0.f;
      v_tile[jj][c] = in ? to_float(v_head[key * a.v_strides[2] + c]) : 0.f;
    }
    __syncthreads();
    const int64_t key = j0 + lane;
    float s = -INFINITY;
    if (active && lane < KT && key < key_end && (mask_row == nullptr || mask_row[key * a.mask_strides[3]])) {
      float dot = 0.f;
      for (int c = 0; c < a.d; ++c) dot += q_rows[warp][c] * k_tile[lane][c];
      s = dot;
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // nothing allowed so far (uniform across the warp)
    const float p = s == -INFINITY ? 0.f : expf(s - m_new);
    const float alpha = m == -INFINITY ? 0.f : expf(m - m_new);
    l = l * alpha + warp_sum(p);
    m = m_new;
    for (int t = 0; t < kPerLane; ++t) acc[t] *= alpha;
    for (int jj = 0; jj < KT; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      for (int t = 0; t < kPerLane; ++t) acc[t] += pj * v_tile[jj][lane + 32 * t];
    }
  }
  if (!active) return;
  const int64_t row = (b * a.H + h) * a.Tq + i;
  if (a.splits == 1) {
    T* out = static_cast<T*>(a.out) + row * a.d;
    const float inv = l > 0.f ? 1.f / l : 0.f;  // nothing to attend to: zeros
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < a.d) out[lane + 32 * t] = from_float<T>(acc[t] * inv);
  } else {
    float* part = a.workspace + (row * a.splits + blockIdx.z) * (a.d + 2);
    if (lane == 0) {
      part[0] = m;
      part[1] = l;
    }
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < a.d) part[2 + lane + 32 * t] = acc[t];
  }
}

// Merges the key splits of each row: every part rescaled to the common max.
template <typename T>
__global__ void merge_splits_kernel(AttentionArgs a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= a.B * a.H * a.Tq) return;
  const float* parts = a.workspace + row * a.splits * (a.d + 2);
  T* out = static_cast<T*>(a.out) + row * a.d;
  float m = -INFINITY;
  for (int s = 0; s < a.splits; ++s) m = fmaxf(m, parts[s * (a.d + 2)]);
  float l = 0.f;
  if (m != -INFINITY)
    for (int s = 0; s < a.splits; ++s) {
      const float ms = parts[s * (a.d + 2)];
      if (ms != -INFINITY) l += expf(ms - m) * parts[s * (a.d + 2) + 1];
    }
  for (int64_t c = lane; c < a.d; c += 32) {
    float total = 0.f;
    if (l > 0.f)
      for (int s = 0; s < a.splits; ++s) {
        const float ms = parts[s * (a.d + 2)];
        if (ms != -INFINITY) total += expf(ms - m) * parts[s * (a.d + 2) + 2 + c];
      }
    out[c] = from_float<T>(l > 0.f ? total / l : 0.f);
  }
}

template <typename T, int DMAX, int KT>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((a.Tq + kWarps - 1) / kWarps), static_cast<unsigned>(a.B * a.H),
                  static_cast<unsigned>(a.splits));
  attention_kernel<T, DMAX, KT><<<grid, kWarps * 32, 0, stream>>>(a);
}

}  // namespace

int attention_splits(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int sm_count) {
  const int64_t blocks = (Tq + kWarps - 1) / kWarps * B * H;
  if (blocks >= sm_count || Tk < 512) return 1;
  int64_t splits = (Tk + 255) / 256;
  const int64_t wanted = (2 * sm_count + blocks - 1) / blocks;
  if (splits > wanted) splits = wanted;
  return static_cast<int>(splits > 64 ? 64 : splits);
}

int64_t attention_workspace_floats(int64_t B, int64_t H, int64_t Tq, int64_t d, int splits) {
  return splits > 1 ? B * H * Tq * splits * (d + 2) : 0;
}

int attention(const AttentionArgs& args, void* stream) {
  if (args.B * args.H * args.Tq == 0) return 0;
  if (args.d > kAttentionMaxHeadDim || args.H % args.Hkv != 0) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  VLMZOO_CUDA_DISPATCH(args.dtype, {
    if (args.d <= 64) launch<T, 64, 32>(args, s);
    else if (args.d <= 128) launch<T, 128, 32>(args, s);
    else launch<T, 256, 16>(args, s);
    if (args.splits > 1) {
      const unsigned blocks = static_cast<unsigned>((args.B * args.H * args.Tq + kWarps - 1) / kWarps);
      merge_splits_kernel<T><<<blocks, kWarps * 32, 0, s>>>(args);
    }
  });
  return static_cast<int>(cudaGetLastError());
}

}  // namespace vlmzoo::cuda
