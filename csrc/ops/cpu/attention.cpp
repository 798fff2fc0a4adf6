// attention on CPU, flash style: each task owns a tile of query rows and streams the keys in blocks,
// keeping a running max and sum per row (online softmax), so no [Tq, Tk] score matrix exists.
// The query rows of a tile are the G heads that share one kv head (GQA) times their tokens, so a
// decode step (Tq = 1) still multiplies a [G, d] tile. When there are too few tiles for the
// threads (decode over a long cache), the keys are split and the partial results merged.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)

#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/attention_blocks.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vnni_pack.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// Processes keys [key_begin, key_end) for the tile's rows [row0, row0 + rows) of kv head (b, hkv).
template <typename T>
void attend_tile(const Problem<T>& p, int64_t b, int64_t hkv, int64_t row0, int64_t rows, int64_t key_begin,
                 int64_t key_end, TileState<acc_t<T>> state) {
  using A = acc_t<T>;
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d;
  constexpr int64_t kCols = kBlockK + kChunk;                  // a block widened to whole chunks
  A* q_tile = scratch<A>(kBlockQ * d + kBlockQ * kCols);  // [rows, d], scaled
  A* scores = q_tile + kBlockQ * d;                        // [rows, block], then probabilities
  const bool bf16_gemm = p.bf16_gemm && rows > kSmallRows;
#ifdef VLMZOO_VEC_AVX512
  const bool native_bf16 = bf16_gemm && has_native_bf16();
#endif
  c10::BFloat16* q16 = bf16_gemm ? scratch<c10::BFloat16>(kBlockQ * d + kBlockQ * kCols) : nullptr;
  c10::BFloat16* p16 = bf16_gemm ? q16 + kBlockQ * d : nullptr;  // [rows, cols] probabilities
  const bool* mask_rows[kBlockQ];
  struct Span {
    int64_t begin, end;
    bool dense;
  } row_span[kBlockQ];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = (row0 + r) / p.Tq, i = (row0 + r) % p.Tq, h = hkv * p.G + g;
    const T* qr = p.q + b * p.qs.b + h * p.qs.h + i * p.qs.t;
    for (int64_t c = 0; c < d; c += n) {
      const int64_t cnt = std::min(n, d - c);
      (load(qr + c, cnt) * V(p.scale)).store(q_tile + r * d + c, cnt);
    }
    if constexpr (std::is_same_v<T, c10::BFloat16>)
      if (bf16_gemm) std::copy(qr, qr + d, q16 + r * d);  // unscaled: the scores are scaled in float
    if (p.mask != nullptr) mask_rows[r] = p.mask + b * p.mask_b + h * p.mask_h + i * p.mask_q;
    state.m[r] = -std::numeric_limits<A>::infinity();
    state.l[r] = 0;
    std::fill(state.acc + r * d, state.acc + (r + 1) * d, A(0));
  }
  const T* k_head = p.k + b * p.ks.b + hkv * p.ks.h;
  const T* v_head = p.v + b * p.vs.b + hkv * p.vs.h;
  const A* kt_head = p.kt == nullptr ? nullptr : p.kt + (b * p.Hkv + hkv) * d * p.kt_ld;
  const A* vf_head = p.vf == nullptr ? nullptr : p.vf + (b * p.Hkv + hkv) * p.Tk * d;
  for (int64_t block_begin = key_begin; block_begin < key_end; block_begin += kBlockK) {
    int64_t j0 = block_begin, block = std::min(kBlockK, key_end - block_begin);
    if (p.mask != nullptr) {
      // Trim the block to the keys some row may attend to: a block above a causal diagonal is
      // skipped, the diagonal block shrinks to its allowed span.
      int64_t lo = block, hi = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const bool* mr = mask_rows[r] + j0 * p.mask_k;
        int64_t first = block, last = -1;
        bool dense = true;  // no disallowed key between first and last
        if (p.mask_k == 1) {
          if (const void* f = std::memchr(mr, 1, block)) {
            first = static_cast<const bool*>(f) - mr;
            last = static_cast<const bool*>(memrchr(mr, 1, block)) - mr;
            dense = std::memchr(mr + first, 0, last - first + 1) == nullptr;
          }
        } else {
          for (int64_t jj = 0; jj < block; ++jj) {
            if (!mr[jj * p.mask_k]) continue;
            dense = dense && (last < 0 || last == jj - 1);
            first = std::min(first, jj);
            last = jj;
          }
        }
        row_span[r] = {first, last + 1, dense};
        lo = std::min(lo, first);
        hi = std::max(hi, last + 1);
      }
      if (hi <= lo) continue;
      for (int64_t r = 0; r < rows; ++r) {
        row_span[r].begin = std::max<int64_t>(row_span[r].begin - lo, 0);
        row_span[r].end = std::max<int64_t>(row_span[r].end - lo, 0);
      }
      j0 += lo;
      block = hi - lo;
    }
    const bool small = rows <= kSmallRows;
    A* sbase = scores;  // row r of this block's scores: sbase + r * sld
    int64_t sld = block, aligned = j0, lead = 0, cols = block;
    bool done = false;
    if constexpr (std::is_same_v<A, float>) {
      if (small)
        done = with_chunks(d, [&](auto nc) {
          small_scores<decltype(nc)::value>(q_tile, rows, k_head + j0 * p.ks.t, p.ks.t, block, scores);
        });
    }
    if (done) {
    } else if (small) {
      for (int64_t jj = 0; jj < block; ++jj) {
        const T* kr = k_head + (j0 + jj) * p.ks.t;
        for (int64_t r = 0; r < rows; ++r) {
          V dot(0);
          for (int64_t c = 0; c < d; c += n) {
            const int64_t cnt = std::min(n, d - c);
            dot = at::vec::fmadd(V::loadu(q_tile + r * d + c, cnt), load(kr + c, cnt), dot);
          }
          scores[r * block + jj] = reduce_sum<T>(dot);
        }
      }
    } else if (bf16_gemm) {
      // Whole chunks [aligned, aligned + cols) around the block; scores row r of the block start at
      // scores + r * cols + lead.
      aligned = j0 / kChunk * kChunk;
      lead = j0 - aligned;
      cols = (lead + block + kChunk - 1) / kChunk * kChunk;
      sld = cols;
      if constexpr (std::is_same_v<A, float>) {
        const c10::BFloat16* k_packed = p.k_vnni + (b * p.Hkv + hkv) * d * p.tk_pad;
        gemm(rows, cols, d, q16, d, k_packed + 2 * aligned, p.tk_pad, scores, cols, /*add=*/false);
      }
      sbase = scores + lead;
    } else {
      gemm(rows, block, d, q_tile, d, kt_head + j0, p.kt_ld, scores, block, /*add=*/false);
    }
    const A* v_ptr = nullptr;
    int64_t v_ld = d;
    if constexpr (std::is_same_v<T, A>) {
      v_ptr = v_head + j0 * p.vs.t;
      v_ld = p.vs.t;
    } else {
      v_ptr = small ? nullptr : vf_head + j0 * d;
    }
    for (int64_t r = 0; r < rows; ++r) {
      A* sr = sbase + r * sld;
      if (p.mask != nullptr) {  // allowed keys of a row: a span, possibly with holes
        const auto& span = row_span[r];
        const A neg_inf = -std::numeric_limits<A>::infinity();
        std::fill(sr, sr + std::min(span.begin, block), neg_inf);
        std::fill(sr + std::min(span.end, block), sr + block, neg_inf);
        if (!span.dense) {
          const bool* mr = mask_rows[r] + j0 * p.mask_k;
          for (int64_t jj = span.begin; jj < span.end; ++jj)
            if (!mr[jj * p.mask_k]) sr[jj] = neg_inf;
        }
      }
      c10::BFloat16* pr = bf16_gemm ? p16 + r * cols : nullptr;  // this row's bf16 probabilities
      if (pr != nullptr) {
        std::fill(pr, pr + lead, c10::BFloat16(0.f));
        std::fill(pr + lead + block, pr + cols, c10::BFloat16(0.f));
      }
      // The bf16 GEMMs ran on unscaled q: scale here (p.scale > 0 there, so -inf stays -inf).
      const A scale = bf16_gemm ? p.scale : A(1);
      const A m_new = std::max(state.m[r], scaled_max(sr, block, scale));
      if (m_new == -std::numeric_limits<A>::infinity()) {  // nothing allowed yet: contribute zeros
        std::fill(sr, sr + block, A(0));
        if (pr != nullptr) std::fill(pr + lead, pr + lead + block, c10::BFloat16(0.f));
        continue;
      }
      A row_sum;
      if constexpr (std::is_same_v<A, float>) {
        if (pr == nullptr) row_sum = exp_and_sum(sr, block, scale, m_new, sr);
#ifdef VLMZOO_VEC_AVX512
        else if (native_bf16) row_sum = exp_and_sum_native_bf16(sr, block, scale, m_new, pr + lead);
#endif
        else row_sum = exp_and_sum(sr, block, scale, m_new, pr + lead);
      } else {
        row_sum = exp_and_sum(sr, block, scale, m_new, sr);
      }
      const A alpha = std::exp(state.m[r] - m_new);
      state.l[r] = state.l[r] * alpha + row_sum;
      state.m[r] = m_new;
      if (alpha != A(1)) {
        A* ar = state.acc + r * d;
        for (int64_t c = 0; c < d; c += n) {
          const int64_t cnt = std::min(n, d - c);
          (V::loadu(ar + c, cnt) * V(alpha)).store(ar + c, cnt);
        }
      }
    }
    done = false;
    if constexpr (std::is_same_v<A, float>) {
      if (small)
        done = with_chunks(d, [&](auto nc) {
          small_accumulate<decltype(nc)::value>(scores, rows, v_head + j0 * p.vs.t, p.vs.t, block, state.acc);
        });
    }
    if (done) {
    } else if (small) {
      for (int64_t jj = 0; jj < block; ++jj) {
        const T* vr = v_head + (j0 + jj) * p.vs.t;
        for (int64_t c = 0; c < d; c += n) {
          const int64_t cnt = std::min(n, d - c);
          const V vv = load(vr + c, cnt);
          for (int64_t r = 0; r < rows; ++r) {
            A* ar = state.acc + r * d + c;
            at::vec::fmadd(V(scores[r * block + jj]), vv, V::loadu(ar, cnt)).store(ar, cnt);
          }
        }
      }
    } else if (bf16_gemm) {
      if constexpr (std::is_same_v<A, float>) {
        const c10::BFloat16* v_packed = p.v_vnni + (b * p.Hkv + hkv) * p.tk_pad * d;
        gemm(rows, d, cols, p16, cols, v_packed + aligned * d, d, state.acc, d, /*add=*/true);
      }
    } else {
      gemm(rows, d, block, scores, block, v_ptr, v_ld, state.acc, d, /*add=*/true);
    }
  }
}

template <typename T>
void store_rows(const Problem<T>& p, int64_t b, int64_t hkv, int64_t row0, int64_t rows, const acc_t<T>* acc,
                const acc_t<T>* l, T* out) {
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d, H = p.Hkv * p.G;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = (row0 + r) / p.Tq, i = (row0 + r) % p.Tq, h = hkv * p.G + g;
    T* outr = out + ((b * H + h) * p.Tq + i) * d;
    const V inv(l[r] > 0 ? acc_t<T>(1) / l[r] : acc_t<T>(0));  // nothing to attend to: zeros
    for (int64_t c = 0; c < d; c += n) {
      const int64_t cnt = std::min(n, d - c);
      store(outr + c, V::loadu(acc + r * d + c, cnt) * inv, cnt);
    }
  }
}

// K transposed to [B * Hkv, d, kt_ld] (and V converted to acc_t), once for all query tiles; for the
// bf16 GEMMs, K^T and V in VNNI chunks instead.
// The buffers are uninitialised tensors (a std::vector would zero megabytes on every call).
template <typename T>
void pack_keys(Problem<T>& p, int64_t B, at::Tensor& kt, at::Tensor& vf, at::Tensor& k_vnni, at::Tensor& v_vnni) {
  using A = acc_t<T>;
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d, chunks = (p.Tk + kChunk - 1) / kChunk;
  p.kt_ld = (p.Tk + 15) / 16 * 16 + 16;  // not a power of two: the d rows spread over the L1 sets
  const auto acc_type = c10::CppTypeToScalarType<A>::value;
  if (p.bf16_gemm) {
    p.tk_pad = chunks * kChunk;
    k_vnni = at::empty({B * p.Hkv * d * p.tk_pad}, at::kBFloat16);
    v_vnni = at::empty({B * p.Hkv * p.tk_pad * d}, at::kBFloat16);
  } else {
    kt = at::empty({B * p.Hkv * d * p.kt_ld}, acc_type);
    if (!std::is_same_v<T, A>) vf = at::empty({B * p.Hkv * p.Tk * d}, acc_type);
  }
  auto* k_vnni_data = k_vnni.defined() ? k_vnni.mutable_data_ptr<c10::BFloat16>() : nullptr;
  auto* v_vnni_data = v_vnni.defined() ? v_vnni.mutable_data_ptr<c10::BFloat16>() : nullptr;
  A* kt_data = kt.defined() ? kt.mutable_data_ptr<A>() : nullptr;
  A* vf_data = vf.defined() ? vf.mutable_data_ptr<A>() : nullptr;
  at::parallel_for(0, B * p.Hkv * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / chunks, j_begin = (task % chunks) * kChunk;
      const int64_t j_end = std::min(p.Tk, j_begin + kChunk), b = head / p.Hkv, hkv = head % p.Hkv;
      const T* k_rows = p.k + b * p.ks.b + hkv * p.ks.h;
      const T* v_rows = p.v + b * p.vs.b + hkv * p.vs.h;
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        if (p.bf16_gemm) {  // keys past Tk are zeros (their scores are never used)
          const int64_t valid = j_end - j_begin;
          pack_keys_transposed_vnni(k_rows + j_begin * p.ks.t, valid, p.ks.t, d, kChunk, p.tk_pad,
                                    k_vnni_data + head * d * p.tk_pad + 2 * j_begin);
          pack_rows_vnni(v_rows + j_begin * p.vs.t, valid, kChunk, p.vs.t, d, v_vnni_data + (head * p.tk_pad + j_begin) * d);
          continue;
        }
      }
      A* dst = kt_data + head * d * p.kt_ld;
      for (int64_t j = j_begin; j < j_end; ++j)
        for (int64_t c = 0; c < d; ++c) dst[c * p.kt_ld + j] = static_cast<A>(k_rows[j * p.ks.t + c]);
      if (vf_data != nullptr) {
        for (int64_t j = j_begin; j < j_end; ++j) {
          A* vd = vf_data + (head * p.Tk + j) * d;
          for (int64_t c = 0; c < d; c += n) load(v_rows + j * p.vs.t + c, std::min(n, d - c)).store(vd + c, std::min(n, d - c));
        }
      }
    }
  });
  p.kt = kt_data;
  p.vf = vf_data;
  p.k_vnni = k_vnni_data;
  p.v_vnni = v_vnni_data;
}

template <typename T>
void attention_kernel(Problem<T> p, int64_t B, T* out) {
  using A = acc_t<T>;
  const int64_t d = p.d, rows_per_head = p.G * p.Tq;
  at::Tensor kt, vf, k_vnni, v_vnni;
  // oneDNN cannot pack every shape: head dims that are multiples of 32 (32..128) are the ones it takes.
  p.bf16_gemm = std::is_same_v<T, c10::BFloat16> && d % 32 == 0 && p.scale > 0 &&
                at::native::cpublas::could_pack(at::kBFloat16);
  if (std::min(rows_per_head, kBlockQ) > kSmallRows) pack_keys(p, B, kt, vf, k_vnni, v_vnni);
  const int64_t tiles = (rows_per_head + kBlockQ - 1) / kBlockQ;
  const int64_t base_tasks = B * p.Hkv * tiles;
  const int64_t threads = at::get_num_threads();
  int64_t splits = 1;
  if (base_tasks < 2 * threads && p.Tk >= 2 * kMinSplit)
    splits = std::min((p.Tk + kMinSplit - 1) / kMinSplit, (2 * threads + base_tasks - 1) / base_tasks);
  const int64_t split_len = ((p.Tk + splits - 1) / splits + kChunk - 1) / kChunk * kChunk;  // whole chunks
  // Partial results per (task, row) when the keys are split: m, l, acc[d].
  std::vector<A> partial(splits > 1 ? base_tasks * splits * kBlockQ * (d + 2) : 0);
  at::parallel_for(0, base_tasks * splits, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t split = task % splits, tile = (task / splits) % tiles;
      const int64_t hkv = (task / splits / tiles) % p.Hkv, b = task / splits / tiles / p.Hkv;
      const int64_t row0 = tile * kBlockQ, rows = std::min(kBlockQ, rows_per_head - row0);
      const int64_t key_begin = split * split_len, key_end = std::min(p.Tk, key_begin + split_len);
      thread_local std::vector<A> own;  // the tile's state when it is not merged later
      if (splits == 1 && static_cast<int64_t>(own.size()) < kBlockQ * (d + 2)) own.resize(kBlockQ * (d + 2));
      A* mine = splits > 1 ? partial.data() + task * kBlockQ * (d + 2) : own.data();
      TileState<A> st{mine, mine + kBlockQ, mine + 2 * kBlockQ};
      attend_tile(p, b, hkv, row0, rows, key_begin, key_end, st);
      if (splits == 1) store_rows(p, b, hkv, row0, rows, st.acc, st.l, out);
    }
    if (p.bf16_gemm) at::native::cpublas::brgemm_release(/*is_vnni=*/true);  // hand the AMX tiles back
  });
  if (splits == 1) return;
  // Merge the splits of each tile: rescale every partial to the common max.
  at::parallel_for(0, base_tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(kBlockQ * d), l(kBlockQ);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tile = t % tiles, hkv = (t / tiles) % p.Hkv, b = t / tiles / p.Hkv;
      const int64_t row0 = tile * kBlockQ, rows = std::min(kBlockQ, rows_per_head - row0);
      for (int64_t r = 0; r < rows; ++r) {
        A m = -std::numeric_limits<A>::infinity();
        for (int64_t s = 0; s < splits; ++s) m = std::max(m, partial[(t * splits + s) * kBlockQ * (d + 2) + r]);
        l[r] = 0;
        std::fill(acc.begin() + r * d, acc.begin() + (r + 1) * d, A(0));
        if (m == -std::numeric_limits<A>::infinity()) continue;
        for (int64_t s = 0; s < splits; ++s) {
          const A* part = partial.data() + (t * splits + s) * kBlockQ * (d + 2);
          const A w = std::exp(part[r] - m);
          if (w == A(0)) continue;
          l[r] += w * part[kBlockQ + r];
          const A* pacc = part + 2 * kBlockQ + r * d;
          for (int64_t c = 0; c < d; ++c) acc[r * d + c] += w * pacc[c];
        }
      }
      store_rows(p, b, hkv, row0, rows, acc.data(), l.data(), out);
    }
  });
}

}  // namespace

at::Tensor attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                     const std::optional<at::Tensor>& allowed, double scale) {
  auto unit_last = [](const at::Tensor& t) { return t.stride(3) == 1 ? t : t.contiguous(); };
  auto q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), d = q.size(3), Hkv = k.size(1), Tk = k.size(2);
  auto out = at::empty({B, H, Tq, d}, q.options());
  if (out.numel() == 0) return out;
  if (Tk == 0) return out.zero_();
  at::Tensor mask;
  if (allowed.has_value()) mask = allowed->expand({B, H, Tq, Tk});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "vlmzoo::attention", [&] {
    Problem<scalar_t> p{};
    p.q = q.const_data_ptr<scalar_t>();
    p.k = k.const_data_ptr<scalar_t>();
    p.v = v.const_data_ptr<scalar_t>();
    p.qs = {q.stride(0), q.stride(1), q.stride(2)};
    p.ks = {k.stride(0), k.stride(1), k.stride(2)};
    p.vs = {v.stride(0), v.stride(1), v.stride(2)};
    if (mask.defined()) {
      p.mask = mask.const_data_ptr<bool>();
      p.mask_b = mask.stride(0), p.mask_h = mask.stride(1), p.mask_q = mask.stride(2), p.mask_k = mask.stride(3);
    }
    p.Hkv = Hkv, p.G = H / Hkv, p.Tq = Tq, p.Tk = Tk, p.d = d;
    p.scale = static_cast<acc_t<scalar_t>>(scale);
    attention_kernel(p, B, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
