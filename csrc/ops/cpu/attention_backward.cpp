// attention backward on CPU, FlashAttention-2 style: no [Tq, Tk] matrix exists, only per-thread
// [tile, block] pieces of it.
//
// The query rows of one kv head are its G query heads times their tokens (R = G * Tq rows, as in the
// forward), so GQA heads accumulate into their kv head's dK / dV without atomics. Three passes:
//   1. pack the keys: K^T and V^T (and K rows, for bfloat16/half) in the accumulation type (bfloat16:
//      K^T and V^T in VNNI chunks instead, see below);
//   2. per (b, kv head, query tile): pack Q, Q^T, dO, dO^T, D = rowsum(dO * O) (O: the forward's
//      output, saved by the autograd function), and the row logsumexp of the scaled scores by an
//      online max / sum over the keys. The forward kernel does not return the logsumexp; this pass
//      costs one GEMM of six but keeps the forward (and its owner's changes to it) as it is;
//   3. per (b, kv head, key split): for each key block, for each query tile
//        S = Q K^T, P = exp(scale S - lse), dP = dO V^T, dS = scale P (dP - D),
//        dV^T += dO^T P, dK^T += Q^T dS, dQ += dS K,
//      dK^T / dV^T of the block in per-thread [d, block] buffers written out once, dQ accumulated per
//      split (one split per kv head unless there are too few kv heads for the threads; the splits
//      own interleaved key blocks and are summed at the end).
// Masked keys get P = 0, rows with nothing allowed have lse = -inf and P = 0 (zero gradients), and
// (tile, block) pairs with nothing allowed are skipped, so a causal mask costs about half.
// The GEMMs accumulate in float32 through at::native::cpublas::brgemm (float64: plain loops, for
// gradcheck). Those with P or dS run on float32 operands; for bfloat16 inputs S = Q K^T and
// dP = dO V^T multiply the bfloat16 inputs themselves in oneDNN's bf16 brgemm (AMX where present):
// the products are exact in float32, so nothing is rounded that the float path keeps.
// Memory: the packs are O(B * H * T * d) (about six times q in float32), plus per-thread blocks.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)

#include <ATen/native/CPUBlas.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/kernels.h"
#include "ops/cpu/kernel_util.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

constexpr int64_t kTileQ = 64;    // query rows per tile
constexpr int64_t kBlockK = 128;  // keys per block
constexpr int64_t kAlign = 16;    // trimmed blocks keep whole 16-key groups (fewer GEMM shapes)
constexpr int64_t kPackChunk = 64;
constexpr int64_t kChunk = 64;    // keys per VNNI-packed chunk (oneDNN packs at most 64 columns)
static_assert(kBlockK % kChunk == 0 && kPackChunk == kChunk);

// C[M, cols] = A[M, K] B[K, cols] with B in VNNI chunks of kChunk columns (cpublas::pack), bf16 products
// accumulated in float: oneDNN's bf16 brgemm (AMX / AVX512-BF16).
inline void gemm_chunks(int64_t M, int64_t cols, int64_t K, const c10::BFloat16* a, int64_t lda,
                        const c10::BFloat16* b_chunks, float* c, int64_t ldc) {
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk)
    at::native::cpublas::brgemm(M, kChunk, K, lda, kChunk, ldc, /*add_C=*/false, a, b_chunks + c0 * K, c + c0,
                                /*is_vnni=*/true);
}
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// dst[N, M] (leading dimension ld_dst) = src[M, N]^T (leading dimension ld_src); 16x16 register blocks
// for float (at::vec), plain loops for double.
template <typename A>
inline void transpose(const A* src, int64_t ld_src, A* dst, int64_t ld_dst, int64_t M, int64_t N) {
  at::vec::transpose_mxn<A>(src, ld_src, dst, ld_dst, static_cast<int>(M), static_cast<int>(N));
}

// Rows [0, rows) x [0, d) of T (row stride ld) converted to A, contiguous [rows, d].
template <typename T>
void load_rows(const T* src, int64_t ld, int64_t rows, int64_t d, acc_t<T>* dst) {
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < d; c += n) {
      const int64_t cnt = std::min(n, d - c);
      load(src + r * ld + c, cnt).store(dst + r * d + c, cnt);
    }
  }
}

template <typename T>
struct Problem {
  using A = acc_t<T>;
  const T *q, *k, *v, *o, *g;
  Strides qs, ks, vs, os, gs;
  const bool* mask = nullptr;  // null: everything allowed
  int64_t mask_b = 0, mask_h = 0, mask_q = 0, mask_k = 0;
  int64_t B, Hkv, G, Tq, Tk, d, R;  // R = G * Tq query rows per kv head
  A scale;
  // Packed per kv head (index b * Hkv + hkv), in A.
  int64_t r_ld, k_ld;   // leading dimensions of the transposed packs (padded, not powers of two)
  A* q_rows;            // [R, d]
  A* q_t;               // [d, r_ld]
  A* g_rows;            // [R, d] = dO
  A* g_t;               // [d, r_ld]
  A* lse;               // [R] logsumexp of the scaled scores (-inf: nothing allowed)
  A* delta;             // [R] rowsum(dO * O)
  A* k_t;               // [d, k_ld]
  A* v_t;               // [d, k_ld]
  A* k_rows;            // [Tk, d] (bfloat16/half only; float/double read k itself)
  // bfloat16 where oneDNN has a bf16 brgemm: S = Q K^T and dP = dO V^T multiply the bfloat16 inputs
  // themselves (exact products, float accumulation, as the float GEMMs), on K^T and V^T packed in VNNI
  // chunks of kChunk keys (zeros past Tk) instead of k_t / v_t. The GEMMs with P or dS stay float.
  bool bf16_gemm = false;
  int64_t chunks = 0;             // kChunk-key chunks per kv head
  c10::BFloat16* q16 = nullptr;   // [R, d] q rows
  c10::BFloat16* g16 = nullptr;   // [R, d] dO rows
  c10::BFloat16* k_vnni = nullptr;  // [chunks, d * kChunk]
  c10::BFloat16* v_vnni = nullptr;  // [chunks, d * kChunk]

  int64_t head(int64_t b, int64_t hkv) const { return b * Hkv + hkv; }
  // Row r of kv head (b, hkv): query head hkv * G + r / Tq, token r % Tq.
  template <typename P>
  const P* row_ptr(const P* base, const Strides& s, int64_t b, int64_t hkv, int64_t r) const {
    return base + b * s.b + (hkv * G + r / Tq) * s.h + (r % Tq) * s.t;
  }
  const bool* mask_row(int64_t b, int64_t hkv, int64_t r) const {
    return mask + b * mask_b + (hkv * G + r / Tq) * mask_h + (r % Tq) * mask_q;
  }
  // K rows of kv head (b, hkv) as A, with their row stride.
  const A* key_rows(int64_t b, int64_t hkv, int64_t& ld) const {
    if constexpr (std::is_same_v<T, A>) {
      ld = ks.t;
      return k + b * ks.b + hkv * ks.h;
    } else {
      ld = d;
      return k_rows + head(b, hkv) * Tk * d;
    }
  }
};

// Allowed keys of each row of a tile within keys [j0, j0 + block): span [begin, end) relative to
// the trimmed block, dense when it has no hole. The block is trimmed to whole kAlign groups around
// the union of the spans; returns false when no row allows any key.
struct Span {
  int64_t begin, end;
  bool dense;
};

bool trim_block(const bool* const* mask_rows, int64_t rows, int64_t mask_k, int64_t align, int64_t& j0, int64_t& block,
                Span* span) {
  int64_t lo = block, hi = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const bool* mr = mask_rows[r] + j0 * mask_k;
    int64_t first = block, last = -1;
    bool dense = true;
    if (mask_k == 1) {
      if (const void* f = std::memchr(mr, 1, block)) {
        first = static_cast<const bool*>(f) - mr;
        last = static_cast<const bool*>(memrchr(mr, 1, block)) - mr;
        dense = std::memchr(mr + first, 0, last - first + 1) == nullptr;
      }
    } else if (mask_k == 0) {
      if (mr[0]) first = 0, last = block - 1;
    } else {
      for (int64_t jj = 0; jj < block; ++jj) {
        if (!mr[jj * mask_k]) continue;
        dense = dense && (last < 0 || last == jj - 1);
        first = std::min(first, jj);
        last = jj;
      }
    }
    span[r] = {first, last + 1, dense};
    lo = std::min(lo, first);
    hi = std::max(hi, last + 1);
  }
  if (hi <= lo) return false;
  lo = lo / align * align;
  hi = std::min(block, round_up(hi, align));
  for (int64_t r = 0; r < rows; ++r) {
    span[r].begin = std::max<int64_t>(span[r].begin - lo, 0);
    span[r].end = std::max<int64_t>(span[r].end - lo, 0);
  }
  j0 += lo;
  block = hi - lo;
  return true;
}

// Sets the disallowed scores of row sr (keys j0 .. j0 + block of mask row mr) to -inf.
template <typename A>
void mask_row_scores(A* sr, const bool* mr, int64_t mask_k, int64_t j0, int64_t block, const Span& span) {
  const A neg_inf = -std::numeric_limits<A>::infinity();
  std::fill(sr, sr + std::min(span.begin, block), neg_inf);
  std::fill(sr + std::min(span.end, block), sr + block, neg_inf);
  if (!span.dense) {
    const bool* m = mr + j0 * mask_k;
    for (int64_t jj = span.begin; jj < span.end; ++jj)
      if (!m[jj * mask_k]) sr[jj] = neg_inf;
  }
}

// Pass 1: K^T, V^T (and K rows for reduced types) of every kv head, in chunks of keys.
template <typename T>
void pack_keys(const Problem<T>& p) {
  using A = acc_t<T>;
  const int64_t d = p.d, chunks = (p.Tk + kPackChunk - 1) / kPackChunk;
  at::parallel_for(0, p.B * p.Hkv * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / chunks, j_begin = (task % chunks) * kPackChunk;
      const int64_t j_end = std::min(p.Tk, j_begin + kPackChunk), b = head / p.Hkv, hkv = head % p.Hkv;
      const T* k_head = p.k + b * p.ks.b + hkv * p.ks.h;
      const T* v_head = p.v + b * p.vs.b + hkv * p.vs.h;
      const int64_t len = j_end - j_begin;
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        if (p.bf16_gemm) {
          load_rows(k_head + j_begin * p.ks.t, p.ks.t, len, d, p.k_rows + (head * p.Tk + j_begin) * d);
          c10::BFloat16* tmp = scratch<c10::BFloat16>(d * kChunk);  // [d, kChunk]: K^T (V^T) of the chunk
          const auto zero = c10::BFloat16(0.f);
          for (auto [rows, ld, packed] : {std::tuple<const T*, int64_t, c10::BFloat16*>{k_head, p.ks.t, p.k_vnni},
                                          std::tuple<const T*, int64_t, c10::BFloat16*>{v_head, p.vs.t, p.v_vnni}}) {
            for (int64_t jj = 0; jj < kChunk; ++jj)
              for (int64_t c = 0; c < d; ++c) tmp[c * kChunk + jj] = jj < len ? rows[(j_begin + jj) * ld + c] : zero;
            at::native::cpublas::pack(d, kChunk, kChunk, kChunk, at::kBFloat16, at::kBFloat16, tmp,
                                      packed + (head * p.chunks + j_begin / kChunk) * d * kChunk);
          }
          continue;
        }
      }
      A* kt = p.k_t + head * d * p.k_ld + j_begin;
      A* vt = p.v_t + head * d * p.k_ld + j_begin;
      if constexpr (std::is_same_v<T, A>) {
        transpose(k_head + j_begin * p.ks.t, p.ks.t, kt, p.k_ld, len, d);
        transpose(v_head + j_begin * p.vs.t, p.vs.t, vt, p.k_ld, len, d);
      } else {
        A* k_rows = p.k_rows + (head * p.Tk + j_begin) * d;  // K rows in A are a pack of their own
        load_rows(k_head + j_begin * p.ks.t, p.ks.t, len, d, k_rows);
        transpose(k_rows, d, kt, p.k_ld, len, d);
        A* v_rows = scratch<A>(kPackChunk * d);
        load_rows(v_head + j_begin * p.vs.t, p.vs.t, len, d, v_rows);
        transpose(v_rows, d, vt, p.k_ld, len, d);
      }
    }
  });
}

// Pass 2: the query-side packs, D and the logsumexp of one tile of rows [row0, row0 + rows).
template <typename T>
void prepare_tile(const Problem<T>& p, int64_t b, int64_t hkv, int64_t row0, int64_t rows) {
  using A = acc_t<T>;
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d, head = p.head(b, hkv);
  A* q_rows = p.q_rows + head * p.R * d;
  A* q_t = p.q_t + head * d * p.r_ld;
  A* g_rows = p.g_rows + head * p.R * d;
  A* g_t = p.g_t + head * d * p.r_ld;
  A* lse = p.lse + head * p.R;
  A* delta = p.delta + head * p.R;
  const bool* mask_rows[kTileQ];
  for (int64_t r = row0; r < row0 + rows; ++r) {
    const T* qr = p.row_ptr(p.q, p.qs, b, hkv, r);
    const T* gr = p.row_ptr(p.g, p.gs, b, hkv, r);
    const T* orow = p.row_ptr(p.o, p.os, b, hkv, r);
    V dot(0);
    for (int64_t c = 0; c < d; c += n) {
      const int64_t cnt = std::min(n, d - c);
      const V qv = load(qr + c, cnt), gv = load(gr + c, cnt);
      qv.store(q_rows + r * d + c, cnt);
      gv.store(g_rows + r * d + c, cnt);
      dot = at::vec::fmadd(gv, load(orow + c, cnt), dot);
    }
    delta[r] = reduce_sum<T>(dot);
    if (p.mask != nullptr) mask_rows[r - row0] = p.mask_row(b, hkv, r);
    if constexpr (std::is_same_v<T, c10::BFloat16>) {
      if (p.bf16_gemm) {
        std::copy(qr, qr + d, p.q16 + (head * p.R + r) * d);
        std::copy(gr, gr + d, p.g16 + (head * p.R + r) * d);
      }
    }
  }
  // Q^T and dO^T of the tile, from the rows just packed (in L1).
  transpose(q_rows + row0 * d, d, q_t + row0, p.r_ld, rows, d);
  transpose(g_rows + row0 * d, d, g_t + row0, p.r_ld, rows, d);
  // Online max / sum over the key blocks.
  A* m = scratch<A>(2 * kTileQ + kTileQ * kBlockK);
  A* l = m + kTileQ;
  A* scores = l + kTileQ;
  std::fill(m, m + rows, -std::numeric_limits<A>::infinity());
  std::fill(l, l + rows, A(0));
  Span span[kTileQ];
  const A* kt = p.k_t == nullptr ? nullptr : p.k_t + head * d * p.k_ld;
  const int64_t align = p.bf16_gemm ? kChunk : kAlign;
  const V vscale(p.scale);
  // The scale is applied inside the exp; a scale <= 0 (which would turn the -inf of masked keys)
  // multiplies the scores first.
  const bool scale_first = !(p.scale > A(0));
  const V vexp_scale(scale_first ? A(1) : p.scale);
  for (int64_t block_begin = 0; block_begin < p.Tk; block_begin += kBlockK) {
    int64_t j0 = block_begin, block = std::min(kBlockK, p.Tk - block_begin);
    if (p.mask != nullptr && !trim_block(mask_rows, rows, p.mask_k, align, j0, block, span)) continue;
    int64_t ld = block;
    if constexpr (std::is_same_v<A, float>) {
      if (p.bf16_gemm) {  // whole chunks; the columns past the block are not read
        ld = round_up(block, kChunk);
        gemm_chunks(rows, ld, d, p.q16 + (head * p.R + row0) * d, d,
                    p.k_vnni + (head * p.chunks + j0 / kChunk) * d * kChunk, scores, ld);
      }
    }
    if (!p.bf16_gemm) gemm(rows, block, d, q_rows + row0 * d, d, kt + j0, p.k_ld, scores, ld, /*add=*/false);
    for (int64_t r = 0; r < rows; ++r) {
      A* sr = scores + r * ld;
      if (scale_first) {
        for (int64_t jj = 0; jj < block; jj += n) {
          const int64_t cnt = std::min(n, block - jj);
          (V::loadu(sr + jj, cnt) * vscale).store(sr + jj, cnt);
        }
      }
      if (p.mask != nullptr) mask_row_scores(sr, mask_rows[r], p.mask_k, j0, block, span[r]);
      V vmax(-std::numeric_limits<A>::infinity());
      for (int64_t jj = 0; jj < block; jj += n) {
        const int64_t cnt = std::min(n, block - jj);
        vmax = at::vec::maximum(vmax, V::set(V(-std::numeric_limits<A>::infinity()), V::loadu(sr + jj, cnt), cnt));
      }
      A block_max = at::vec::vec_reduce_all<A>([](const V& x, const V& y) { return at::vec::maximum(x, y); }, vmax);
      if (!scale_first && block_max != -std::numeric_limits<A>::infinity()) block_max *= p.scale;
      const A m_new = std::max(m[r], block_max);
      if (m_new == -std::numeric_limits<A>::infinity()) continue;
      V vsum(0);
      const V vm(m_new);
      for (int64_t jj = 0; jj < block; jj += n) {
        const int64_t cnt = std::min(n, block - jj);
        vsum = vsum + V::set(V(0), fast_exp(at::vec::fmsub(V::loadu(sr + jj, cnt), vexp_scale, vm)), cnt);
      }
      l[r] = l[r] * std::exp(m[r] - m_new) + reduce_sum<T>(vsum);
      m[r] = m_new;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    lse[row0 + r] = l[r] > A(0) ? m[r] + std::log(l[r]) : -std::numeric_limits<A>::infinity();
}

// Pass 3: keys [j_begin, j_end) of kv head (b, hkv), block by block, against every query tile.
// dq: [R, d] accumulator of this task's split. dk, dv: the outputs' rows of this kv head.
template <typename T>
void backward_block(const Problem<T>& p, int64_t b, int64_t hkv, int64_t j_begin, int64_t j_end, acc_t<T>* dq,
                    T* dk, T* dv) {
  using A = acc_t<T>;
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d, head = p.head(b, hkv), width = j_end - j_begin;
  A* probs = scratch<A>(2 * kTileQ * kBlockK + 3 * d * kBlockK);  // [rows, ld] P
  A* dsc = probs + kTileQ * kBlockK;                              // [rows, ld] dP, then dS
  A* dk_t = dsc + kTileQ * kBlockK;                               // [d, kBlockK] dK^T of the block
  A* dv_t = dk_t + d * kBlockK;                                   // [d, kBlockK] dV^T of the block
  A* out_rows = dv_t + d * kBlockK;                               // [width, d] (bfloat16/half output)
  std::fill(dk_t, dk_t + 2 * d * kBlockK, A(0));
  const A* q_rows = p.q_rows + head * p.R * d;
  const A* q_t = p.q_t + head * d * p.r_ld;
  const A* g_rows = p.g_rows + head * p.R * d;
  const A* g_t = p.g_t + head * d * p.r_ld;
  const A* lse = p.lse + head * p.R;
  const A* delta = p.delta + head * p.R;
  const A* kt = p.k_t == nullptr ? nullptr : p.k_t + head * d * p.k_ld;
  const A* vt = p.v_t == nullptr ? nullptr : p.v_t + head * d * p.k_ld;
  int64_t k_ld = 0;
  const A* k_rows = p.key_rows(b, hkv, k_ld);
  const bool* mask_rows[kTileQ];
  Span span[kTileQ];
  const V vscale(p.scale);
  for (int64_t row0 = 0; row0 < p.R; row0 += kTileQ) {
    const int64_t rows = std::min(kTileQ, p.R - row0);
    int64_t j0 = j_begin, block = width;
    if (p.mask != nullptr) {
      for (int64_t r = 0; r < rows; ++r) mask_rows[r] = p.mask_row(b, hkv, row0 + r);
      if (!trim_block(mask_rows, rows, p.mask_k, p.bf16_gemm ? kChunk : kAlign, j0, block, span)) continue;
    }
    const int64_t off = j0 - j_begin;
    int64_t ld = block;
    if constexpr (std::is_same_v<A, float>) {
      if (p.bf16_gemm) {  // whole chunks; the columns past the block are not read
        ld = round_up(block, kChunk);
        const int64_t chunk = head * p.chunks + j0 / kChunk;
        gemm_chunks(rows, ld, d, p.q16 + (head * p.R + row0) * d, d, p.k_vnni + chunk * d * kChunk, probs, ld);
        gemm_chunks(rows, ld, d, p.g16 + (head * p.R + row0) * d, d, p.v_vnni + chunk * d * kChunk, dsc, ld);
      }
    }
    if (!p.bf16_gemm) {
      gemm(rows, block, d, q_rows + row0 * d, d, kt + j0, p.k_ld, probs, ld, /*add=*/false);
      gemm(rows, block, d, g_rows + row0 * d, d, vt + j0, p.k_ld, dsc, ld, /*add=*/false);
    }
    for (int64_t r = 0; r < rows; ++r) {
      A* pr = probs + r * ld;
      A* dr = dsc + r * ld;
      const A row_lse = lse[row0 + r];
      if (row_lse == -std::numeric_limits<A>::infinity()) {  // nothing allowed: no gradient
        std::fill(pr, pr + block, A(0));
        std::fill(dr, dr + block, A(0));
        continue;
      }
      // P = exp(scale * S - lse) and dS = scale * P * (dP - D) on the row's allowed span, zeros elsewhere.
      const Span sp = p.mask != nullptr ? span[r] : Span{0, block, true};
      const int64_t lo = std::min(sp.begin, block), hi = std::max(lo, std::min(sp.end, block));
      const V vl(row_lse), vd(delta[row0 + r]);
      for (int64_t jj = lo; jj < hi; jj += n) {
        const int64_t cnt = std::min(n, hi - jj);
        const V pv = fast_exp(at::vec::fmsub(V::loadu(pr + jj, cnt), vscale, vl));
        pv.store(pr + jj, cnt);
        (pv * (V::loadu(dr + jj, cnt) - vd) * vscale).store(dr + jj, cnt);
      }
      std::fill(pr, pr + lo, A(0));
      std::fill(dr, dr + lo, A(0));
      std::fill(pr + hi, pr + block, A(0));
      std::fill(dr + hi, dr + block, A(0));
      if (!sp.dense) {
        const bool* m = mask_rows[r] + j0 * p.mask_k;
        for (int64_t jj = lo; jj < hi; ++jj)
          if (!m[jj * p.mask_k]) pr[jj] = dr[jj] = A(0);
      }
    }
    gemm(d, block, rows, g_t + row0, p.r_ld, probs, ld, dv_t + off, kBlockK, /*add=*/true);
    gemm(d, block, rows, q_t + row0, p.r_ld, dsc, ld, dk_t + off, kBlockK, /*add=*/true);
    gemm(rows, d, block, dsc, ld, k_rows + j0 * k_ld, k_ld, dq + row0 * d, d, /*add=*/true);
  }
  // dK, dV rows of the block (transposed back; untouched keys get zeros).
  if constexpr (std::is_same_v<T, A>) {
    transpose(dk_t, kBlockK, dk + j_begin * d, d, d, width);
    transpose(dv_t, kBlockK, dv + j_begin * d, d, d, width);
  } else {
    for (auto [src, dst] : {std::pair<const A*, T*>{dk_t, dk}, std::pair<const A*, T*>{dv_t, dv}}) {
      transpose(src, kBlockK, out_rows, d, d, width);
      for (int64_t jj = 0; jj < width; ++jj) {
        for (int64_t c = 0; c < d; c += n) {
          const int64_t cnt = std::min(n, d - c);
          store(dst + (j_begin + jj) * d + c, V::loadu(out_rows + jj * d + c, cnt), cnt);
        }
      }
    }
  }
}

template <typename T>
void backward_kernel(Problem<T>& p, T* dq_out, T* dk_out, T* dv_out) {
  using A = acc_t<T>;
  const int64_t d = p.d, heads = p.B * p.Hkv;
  p.r_ld = round_up(p.R, 16) + 16;
  p.k_ld = round_up(p.Tk, 16) + 16;
  // oneDNN packs bf16 B matrices for head dims that are multiples of 32 (as in the forward).
  p.bf16_gemm = std::is_same_v<T, c10::BFloat16> && d % 32 == 0 && at::native::cpublas::could_pack(at::kBFloat16);
  p.chunks = (p.Tk + kChunk - 1) / kChunk;
  at::Tensor packs16;
  if (p.bf16_gemm) {
    packs16 = at::empty({heads * (2 * p.R * d + 2 * p.chunks * kChunk * d)}, at::kBFloat16);
    p.q16 = packs16.mutable_data_ptr<c10::BFloat16>();
    p.g16 = p.q16 + heads * p.R * d;
    p.k_vnni = p.g16 + heads * p.R * d;
    p.v_vnni = p.k_vnni + heads * p.chunks * kChunk * d;
  }
  // Every element of the packs that is read is written first: no zero fill.
  const int64_t key_packs = p.bf16_gemm ? 0 : 2 * d * p.k_ld;  // K^T, V^T in A (else VNNI chunks)
  const int64_t pack_size = heads * (2 * p.R * d + 2 * d * p.r_ld + 2 * p.R + key_packs +
                                     (std::is_same_v<T, A> ? 0 : p.Tk * d));
  auto packs = at::empty({pack_size}, at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value));
  A* next = packs.template mutable_data_ptr<A>();
  auto take = [&](int64_t count) {
    A* out = next;
    next += count;
    return out;
  };
  p.q_rows = take(heads * p.R * d);
  p.g_rows = take(heads * p.R * d);
  p.q_t = take(heads * d * p.r_ld);
  p.g_t = take(heads * d * p.r_ld);
  p.lse = take(heads * p.R);
  p.delta = take(heads * p.R);
  p.k_t = p.bf16_gemm ? nullptr : take(heads * d * p.k_ld);
  p.v_t = p.bf16_gemm ? nullptr : take(heads * d * p.k_ld);
  p.k_rows = std::is_same_v<T, A> ? nullptr : take(heads * p.Tk * d);

  pack_keys(p);
  const int64_t tiles = (p.R + kTileQ - 1) / kTileQ;
  at::parallel_for(0, heads * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / tiles, row0 = (task % tiles) * kTileQ;
      prepare_tile(p, head / p.Hkv, head % p.Hkv, row0, std::min(kTileQ, p.R - row0));
    }
    if (p.bf16_gemm) at::native::cpublas::brgemm_release(/*is_vnni=*/true);  // hand the AMX tiles back
  });

  // Split the keys of a kv head when there are too few kv heads for the threads; each split owns
  // every splits-th key block (a causal mask leaves the last blocks light) and its own dQ.
  const int64_t blocks = (p.Tk + kBlockK - 1) / kBlockK, threads = at::get_num_threads();
  const int64_t splits = heads >= threads ? 1 : std::min(blocks, (2 * threads + heads - 1) / heads);
  const bool direct = std::is_same_v<T, A> && splits == 1;  // dQ accumulates in the output itself
  std::vector<A> dq_partial(direct ? 0 : splits * heads * p.R * d, A(0));
  A* dq_acc = nullptr;
  if constexpr (std::is_same_v<T, A>) {
    if (direct) {
      std::fill(dq_out, dq_out + heads * p.R * d, A(0));
      dq_acc = dq_out;
    }
  }
  if (!direct) dq_acc = dq_partial.data();
  at::parallel_for(0, heads * splits, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / splits, split = task % splits, b = head / p.Hkv, hkv = head % p.Hkv;
      A* dq = dq_acc + (split * heads + head) * p.R * d;
      T* dk = dk_out + head * p.Tk * d;
      T* dv = dv_out + head * p.Tk * d;
      for (int64_t blk = split; blk < blocks; blk += splits) {
        const int64_t j0 = blk * kBlockK;
        backward_block(p, b, hkv, j0, std::min(p.Tk, j0 + kBlockK), dq, dk, dv);
      }
    }
    if (p.bf16_gemm) at::native::cpublas::brgemm_release(/*is_vnni=*/true);
  });
  if (direct) return;
  // Sum the splits' dQ into the output (rows of a kv head are consecutive in [B, H, Tq, d]).
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t total = heads * p.R;
  at::parallel_for(0, total, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t c = 0; c < d; c += n) {
        const int64_t cnt = std::min(n, d - c);
        V acc = V::loadu(dq_acc + row * d + c, cnt);
        for (int64_t s = 1; s < splits; ++s) acc = acc + V::loadu(dq_acc + (s * total + row) * d + c, cnt);
        store(dq_out + row * d + c, acc, cnt);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad_in, const at::Tensor& q_in,
                                                                  const at::Tensor& k_in, const at::Tensor& v_in,
                                                                  const at::Tensor& out_in,
                                                                  const std::optional<at::Tensor>& allowed,
                                                                  double scale) {
  auto unit_last = [](const at::Tensor& t) { return t.stride(3) == 1 ? t : t.contiguous(); };
  auto q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in), o = unit_last(out_in), g = unit_last(grad_in);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), d = q.size(3), Hkv = k.size(1), Tk = k.size(2);
  auto dq = at::empty({B, H, Tq, d}, q.options());
  auto dk = at::empty({B, Hkv, Tk, d}, k.options());
  auto dv = at::empty({B, Hkv, Tk, d}, v.options());
  if (dq.numel() == 0 || dk.numel() == 0) return {dq.zero_(), dk.zero_(), dv.zero_()};
  at::Tensor mask;
  if (allowed.has_value()) mask = allowed->expand({B, H, Tq, Tk});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "vlmzoo::attention_backward", [&] {
    Problem<scalar_t> p{};
    p.q = q.const_data_ptr<scalar_t>();
    p.k = k.const_data_ptr<scalar_t>();
    p.v = v.const_data_ptr<scalar_t>();
    p.o = o.const_data_ptr<scalar_t>();
    p.g = g.const_data_ptr<scalar_t>();
    p.qs = {q.stride(0), q.stride(1), q.stride(2)};
    p.ks = {k.stride(0), k.stride(1), k.stride(2)};
    p.vs = {v.stride(0), v.stride(1), v.stride(2)};
    p.os = {o.stride(0), o.stride(1), o.stride(2)};
    p.gs = {g.stride(0), g.stride(1), g.stride(2)};
    if (mask.defined()) {
      p.mask = mask.const_data_ptr<bool>();
      p.mask_b = mask.stride(0), p.mask_h = mask.stride(1), p.mask_q = mask.stride(2), p.mask_k = mask.stride(3);
    }
    p.B = B, p.Hkv = Hkv, p.G = H / Hkv, p.Tq = Tq, p.Tk = Tk, p.d = d, p.R = (H / Hkv) * Tq;
    p.scale = static_cast<acc_t<scalar_t>>(scale);
    backward_kernel(p, dq.mutable_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(),
                    dv.mutable_data_ptr<scalar_t>());
  });
  return {dq, dk, dv};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
