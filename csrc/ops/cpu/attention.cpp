// attention on CPU, flash style: each task owns a tile of query rows and streams the keys in blocks,
// keeping a running max and sum per row (online softmax), so no [Tq, Tk] score matrix exists.
// The query rows of a tile are the G heads that share one kv head (GQA) times their tokens, so a
// decode step (Tq = 1) still multiplies a [G, d] tile. When there are too few tiles for the
// threads (decode over a long cache), the keys are split and the partial results merged.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include <ATen/native/CPUBlas.h>

#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu {
namespace {

constexpr int64_t kBlockQ = 64;   // query rows per tile
constexpr int64_t kBlockK = 512;  // keys per inner block
constexpr int64_t kMinSplit = 256;  // fewest keys worth a task of their own

// C[M, N] (+)= A[M, K] B[K, N], row-major with leading dimensions.
inline void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                 int64_t ldc, bool add) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, a, b, c, /*is_vnni=*/false);
}
inline void gemm(int64_t M, int64_t N, int64_t K, const double* a, int64_t lda, const double* b, int64_t ldb,
                 double* c, int64_t ldc, bool add) {  // float64 serves gradcheck only: plain loops
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = add ? c[i * ldc + j] : 0.0;
      for (int64_t p = 0; p < K; ++p) s += a[i * lda + p] * b[p * ldb + j];
      c[i * ldc + j] = s;
    }
}

template <typename A>
A* scratch(int64_t n) {  // per-thread buffer, grown on demand (no allocation per task)
  thread_local std::vector<A> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

template <typename V>
inline V fast_exp(const V& x) {
  if constexpr (std::is_same_v<typename V::value_type, float>) return x.exp_u20();
  else return x.exp();
}

struct Strides {
  int64_t b, h, t;
};

template <typename T>
struct Problem {
  const T *q, *k, *v;
  const bool* mask;  // null: everything allowed
  Strides qs, ks, vs;
  int64_t mask_b, mask_h, mask_q, mask_k;
  int64_t Hkv, G, Tq, Tk, d;
  acc_t<T> scale;
};

// Running state of one tile: per row max m, sum l and unnormalised output acc [rows, d].
template <typename A>
struct TileState {
  A* m;
  A* l;
  A* acc;
};

// Processes keys [key_begin, key_end) for the tile's rows [row0, row0 + rows) of kv head (b, hkv).
template <typename T>
void attend_tile(const Problem<T>& p, int64_t b, int64_t hkv, int64_t row0, int64_t rows, int64_t key_begin,
                 int64_t key_end, TileState<acc_t<T>> state) {
  using A = acc_t<T>;
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t d = p.d;
  A* q_tile = scratch<A>(kBlockQ * d + d * kBlockK + kBlockQ * kBlockK + kBlockK * d);
  A* k_packed = q_tile + kBlockQ * d;         // [d, block]: K transposed
  A* scores = k_packed + d * kBlockK;          // [rows, block], then probabilities
  A* v_block = scores + kBlockQ * kBlockK;     // [block, d] when T is not A
  const bool* mask_rows[kBlockQ];
  bool row_all_allowed[kBlockQ];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = (row0 + r) / p.Tq, i = (row0 + r) % p.Tq, h = hkv * p.G + g;
    const T* qr = p.q + b * p.qs.b + h * p.qs.h + i * p.qs.t;
    for (int64_t c = 0; c < d; c += n) {
      const int64_t cnt = std::min(n, d - c);
      (load(qr + c, cnt) * V(p.scale)).store(q_tile + r * d + c, cnt);
    }
    if (p.mask != nullptr) mask_rows[r] = p.mask + b * p.mask_b + h * p.mask_h + i * p.mask_q;
    state.m[r] = -std::numeric_limits<A>::infinity();
    state.l[r] = 0;
    std::fill(state.acc + r * d, state.acc + (r + 1) * d, A(0));
  }
  const T* k_head = p.k + b * p.ks.b + hkv * p.ks.h;
  const T* v_head = p.v + b * p.vs.b + hkv * p.vs.h;
  for (int64_t j0 = key_begin; j0 < key_end; j0 += kBlockK) {
    const int64_t block = std::min(kBlockK, key_end - j0);
    if (p.mask != nullptr) {  // skip blocks with nothing to attend to (e.g. above a causal diagonal)
      bool any = false;
      for (int64_t r = 0; r < rows; ++r) {
        const bool* mr = mask_rows[r] + j0 * p.mask_k;
        bool row_any = false, row_all = true;
        if (p.mask_k == 1) {
          row_any = std::memchr(mr, 1, block) != nullptr;
          row_all = std::memchr(mr, 0, block) == nullptr;
        } else {
          for (int64_t jj = 0; jj < block; ++jj) {
            const bool allowed = mr[jj * p.mask_k];
            row_any = row_any || allowed;
            row_all = row_all && allowed;
          }
        }
        row_all_allowed[r] = row_all;
        any = any || row_any;
      }
      if (!any) continue;
    }
    for (int64_t jj = 0; jj < block; ++jj) {
      const T* kr = k_head + (j0 + jj) * p.ks.t;
      for (int64_t c = 0; c < d; ++c) k_packed[c * block + jj] = static_cast<A>(kr[c]);
    }
    gemm(rows, block, d, q_tile, d, k_packed, block, scores, block, /*add=*/false);
    const A* v_ptr;
    int64_t v_ld;
    if constexpr (std::is_same_v<T, A>) {
      v_ptr = v_head + j0 * p.vs.t;
      v_ld = p.vs.t;
    } else {
      for (int64_t jj = 0; jj < block; ++jj) {
        const T* vr = v_head + (j0 + jj) * p.vs.t;
        for (int64_t c = 0; c < d; c += n) {
          const int64_t cnt = std::min(n, d - c);
          load(vr + c, cnt).store(v_block + jj * d + c, cnt);
        }
      }
      v_ptr = v_block;
      v_ld = d;
    }
    for (int64_t r = 0; r < rows; ++r) {
      A* sr = scores + r * block;
      if (p.mask != nullptr && !row_all_allowed[r]) {
        const bool* mr = mask_rows[r] + j0 * p.mask_k;
        for (int64_t jj = 0; jj < block; ++jj)
          if (!mr[jj * p.mask_k]) sr[jj] = -std::numeric_limits<A>::infinity();
      }
      V vmax(-std::numeric_limits<A>::infinity());
      for (int64_t jj = 0; jj < block; jj += n) {
        const int64_t cnt = std::min(n, block - jj);
        vmax = at::vec::maximum(vmax, V::set(V(-std::numeric_limits<A>::infinity()), V::loadu(sr + jj, cnt), cnt));
      }
      const A block_max =
          at::vec::vec_reduce_all<A>([](const V& x, const V& y) { return at::vec::maximum(x, y); }, vmax);
      const A m_new = std::max(state.m[r], block_max);
      if (m_new == -std::numeric_limits<A>::infinity()) {  // nothing allowed yet: contribute zeros
        std::fill(sr, sr + block, A(0));
        continue;
      }
      V vsum(0);
      const V vm(m_new);
      for (int64_t jj = 0; jj < block; jj += n) {
        const int64_t cnt = std::min(n, block - jj);
        const V e = fast_exp(V::loadu(sr + jj, cnt) - vm);
        e.store(sr + jj, cnt);
        vsum = vsum + V::set(V(0), e, cnt);
      }
      const A alpha = std::exp(state.m[r] - m_new);
      state.l[r] = state.l[r] * alpha + reduce_sum<T>(vsum);
      state.m[r] = m_new;
      if (alpha != A(1)) {
        A* ar = state.acc + r * d;
        for (int64_t c = 0; c < d; c += n) {
          const int64_t cnt = std::min(n, d - c);
          (V::loadu(ar + c, cnt) * V(alpha)).store(ar + c, cnt);
        }
      }
    }
    gemm(rows, d, block, scores, block, v_ptr, v_ld, state.acc, d, /*add=*/true);
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

template <typename T>
void attention_kernel(const Problem<T>& p, int64_t B, T* out) {
  using A = acc_t<T>;
  const int64_t d = p.d, rows_per_head = p.G * p.Tq;
  const int64_t tiles = (rows_per_head + kBlockQ - 1) / kBlockQ;
  const int64_t base_tasks = B * p.Hkv * tiles;
  const int64_t threads = at::get_num_threads();
  int64_t splits = 1;
  if (base_tasks < 2 * threads && p.Tk >= 2 * kMinSplit)
    splits = std::min((p.Tk + kMinSplit - 1) / kMinSplit, (2 * threads + base_tasks - 1) / base_tasks);
  const int64_t split_len = (p.Tk + splits - 1) / splits;
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

}  // namespace vlmzoo::ops::cpu
