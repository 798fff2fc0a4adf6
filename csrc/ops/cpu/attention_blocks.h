#pragma once
// Building blocks of the CPU attention kernel (cpu/attention.cpp, its only includer, after vec.h):
// block sizes, the row softmax, the problem description, and the register-blocked decode loops.
#include "ops/cpu/kernel_util.h"

#include <limits>
#include <type_traits>
#include <vector>

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

constexpr int64_t kBlockQ = 64;  // query rows per tile
constexpr int64_t kBlockK = 512;  // keys per inner block
constexpr int64_t kMinSplit = 256;  // fewest keys worth a task of their own
// Tiles this small (decode) skip packing and GEMM calls: dot products and axpys over K and V rows.
constexpr int64_t kSmallRows = 4;
constexpr int64_t kChunk = 64;  // keys per pack task; heads are padded with zero keys to whole chunks

// The softmax of one row of a block, in two passes (full vectors, then one masked tail).
// Largest of s[0, n) times scale (scale > 0, so the max of the scaled scores).
template <typename A>
A scaled_max(const A* s, int64_t n, A scale) {
  using V = at::vec::Vectorized<A>;
  constexpr int64_t k = V::size();
  const V lowest(-std::numeric_limits<A>::infinity());
  V vmax = lowest;
  int64_t j = 0;
  for (; j + k <= n; j += k) vmax = at::vec::maximum(vmax, V::loadu(s + j));
  if (j < n) vmax = at::vec::maximum(vmax, V::set(lowest, V::loadu(s + j, n - j), n - j));
  return lanes_max(vmax) * scale;
}

// out[j] = exp(s[j] * scale - m) for j < n, returning their sum; out is s itself (exp_u20, 20 ulp) or
// a bfloat16 row of probabilities for the second GEMM, where the cheaper fexp_u20 (about 1e-4
// relative error, far below bfloat16's 4e-3 rounding) does, as in torch's flash kernel.
template <typename A, typename O>
A exp_and_sum(const A* s, int64_t n, A scale, A m, O* out) {
  using V = at::vec::Vectorized<A>;
  constexpr int64_t k = V::size();
  const V vscale(scale), vm(m);
  auto exp = [](const V& x) {
    if constexpr (std::is_same_v<O, c10::BFloat16> && std::is_same_v<A, float>) return x.fexp_u20();
    else return fast_exp(x);
  };
  V vsum(0);
  int64_t j = 0;
  for (; j + k <= n; j += k) {
    const V e = exp(at::vec::fmsub(V::loadu(s + j), vscale, vm));
    vsum = vsum + e;
    if constexpr (std::is_same_v<O, A>) e.store(out + j);
    else store(out + j, e);
  }
  if (j < n) {
    const V e = V::set(V(0), exp(at::vec::fmsub(V::loadu(s + j, n - j), vscale, vm)), n - j);
    vsum = vsum + e;
    if constexpr (std::is_same_v<O, A>) e.store(out + j, n - j);
    else store(out + j, e, n - j);
  }
  return lanes_sum(vsum);
}

#ifdef VLMZOO_VEC_AVX512
// The same into bfloat16 with AVX512-BF16's one-instruction conversion (round to nearest even),
// for CPUs that have it (Cooper Lake, Sapphire Rapids and later): see has_native_bf16().
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))) inline float
exp_and_sum_native_bf16(const float* s, int64_t n, float scale, float m, c10::BFloat16* out) {
  using V = at::vec::Vectorized<float>;
  const V vscale(scale), vm(m);
  V vsum(0);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const V e = at::vec::fmsub(V::loadu(s + j), vscale, vm).fexp_u20();
    vsum = vsum + e;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), __m256i(_mm512_cvtneps_pbh(__m512(e))));
  }
  float sum = lanes_sum(vsum);
  if (j < n) sum += exp_and_sum(s + j, n - j, scale, m, out + j);
  return sum;
}
inline bool has_native_bf16() {
  static const bool supported = __builtin_cpu_supports("avx512bf16");
  return supported;
}
#endif

template <typename T>
struct Problem {
  const T *q, *k, *v;
  const bool* mask;  // null: everything allowed
  Strides qs, ks, vs;
  int64_t mask_b, mask_h, mask_q, mask_k;
  int64_t Hkv, G, Tq, Tk, d;
  acc_t<T> scale;
  // Tiles larger than kSmallRows read K transposed, [B * Hkv, d, kt_ld], packed once per call,
  // and (for bfloat16/half) V converted, [B * Hkv, Tk, d]; null when no tile needs them.
  const acc_t<T>* kt = nullptr;
  int64_t kt_ld = 0;
  const acc_t<T>* vf = nullptr;
  // bfloat16 where oneDNN has a bf16 brgemm (AMX): both GEMMs in bf16 with float accumulation, on
  // K^T and V packed once per call in VNNI layout, chunks of kChunk keys (V also in <= 64-column
  // blocks of d); probabilities are rounded to bf16 for the second GEMM (as torch's flash kernel does).
  bool bf16_gemm = false;
  // Whole heads, keys padded with zeros to tk_pad (whole chunks), so one GEMM call covers a block.
  const c10::BFloat16* k_vnni = nullptr;  // [B * Hkv] x K^T [d, tk_pad] in VNNI
  const c10::BFloat16* v_vnni = nullptr;  // [B * Hkv] x V [tk_pad, d] in VNNI
  int64_t tk_pad = 0;
};

// Running state of one tile: per row max m, sum l and unnormalised output acc [rows, d].
template <typename A>
struct TileState {
  A* m;
  A* l;
  A* acc;
};

// Decode tiles (rows <= kSmallRows), head dim NC * 16: q and the output rows stay in registers while
// the keys stream by. scores[r, jj] = q_r . K[jj]; acc[r] += sum_jj p[r, jj] V[jj].
template <int NC, typename T>
void small_scores(const float* q_tile, int64_t rows, const T* k, int64_t k_stride, int64_t block, float* scores) {
  using V = at::vec::Vectorized<float>;
  for (int64_t r = 0; r < rows; ++r) {
    V q[NC];
    for (int t = 0; t < NC; ++t) q[t] = V::loadu(q_tile + r * NC * 16 + t * 16);
    for (int64_t jj = 0; jj < block; ++jj) {
      const T* kr = k + jj * k_stride;
      V dot = q[0] * load(kr, 16);
      for (int t = 1; t < NC; ++t) dot = at::vec::fmadd(q[t], load(kr + t * 16, 16), dot);
#ifdef VLMZOO_VEC_AVX512
      scores[r * block + jj] = _mm512_reduce_add_ps(__m512(dot));
#else
      scores[r * block + jj] = reduce_sum<float>(dot);
#endif
    }
  }
}

template <int NC, typename T>
void small_accumulate(const float* probs, int64_t rows, const T* v, int64_t v_stride, int64_t block, float* acc) {
  using V = at::vec::Vectorized<float>;
  for (int64_t r = 0; r < rows; ++r) {
    V out[NC];
    for (int t = 0; t < NC; ++t) out[t] = V::loadu(acc + r * NC * 16 + t * 16);
    for (int64_t jj = 0; jj < block; ++jj) {
      const V p(probs[r * block + jj]);
      const T* vr = v + jj * v_stride;
      for (int t = 0; t < NC; ++t) out[t] = at::vec::fmadd(p, load(vr + t * 16, 16), out[t]);
    }
    for (int t = 0; t < NC; ++t) out[t].store(acc + r * NC * 16 + t * 16);
  }
}

// Runs f(std::integral_constant<int, NC>) for the head dims with a register-blocked decode path.
template <typename F>
bool with_chunks(int64_t d, F&& f) {
#ifndef VLMZOO_VEC_AVX512  // the loops above assume 16 floats per vector: the generic loops serve narrower ones
  return false;
#endif
  switch (d) {
    case 32: f(std::integral_constant<int, 2>()); return true;
    case 64: f(std::integral_constant<int, 4>()); return true;
    case 80: f(std::integral_constant<int, 5>()); return true;
    case 96: f(std::integral_constant<int, 6>()); return true;
    case 128: f(std::integral_constant<int, 8>()); return true;
    default: return false;
  }
}

}  // namespace
}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
