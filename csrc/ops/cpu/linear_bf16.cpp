// linear_bf16: bfloat16 weights, float32 arithmetic. The weights are read in the panel layout of
// ops/linear_formats.h (64 output columns; each 32-bit word a pair of input features); a word becomes
// two floats with one shift (the even feature) and one mask (the odd feature), which are exact, and the
// products accumulate with float32 FMA, so the result is F.linear(x, w.float()) up to summation order.
//   Few rows (decode): the widening sits in the inner loop, each weight read once from memory.
//   Many rows (prefill): each thread widens a panel once into a float32 scratch and runs a float32
//   register tile over it for every row tile, so the widening cost is shared by all rows. The tile is
//   6 rows x 64 columns on AVX-512 (each x element feeds 4 FMAs: x is read straight from its rows,
//   unpacked, and 12 x 32 tiles measured 30% slower on those reads).
//   Many rows on a CPU with AMX-BF16 (ops/linear_formats.h, bf16_amx): x is rounded to bfloat16 once and
//   oneDNN's brgemm multiplies it with each panel on the tiles: the panels are already its VNNI layout.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernel_util.h"
#include "ops/linear_formats.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
#if defined(VLMZOO_VEC_AVX512) || defined(VLMZOO_VEC_AVX2)
namespace {
using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();
constexpr int64_t kCols = kBf16PanelCols;
constexpr int64_t kPanelRegs = kCols / kLanes;  // registers per panel row: 4 (AVX-512) or 8 (AVX2)
#ifdef VLMZOO_VEC_AVX512
using Words = __m512i;
inline Words load_words(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline Vec even_of(const Words& w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); }
inline Vec odd_of(const Words& w) {
  return _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}
// Of the 32 registers: 6 x 4 accumulators + 4 weights + 1 broadcast.
constexpr int kTileRows = 6, kTileRegs = 4;
// Inline widening tiles take up to 4 rows (4 x 4 accumulators); up to 2 rows, even and odd features
// accumulate apart (2 x 2 x 4), which gives one row enough independent FMA chains. Up to 32 rows the
// inline tiles run (in groups of 4, the panel cached after the first group): measured side by side, they
// beat widening the panel to memory at 24 rows (1.85x against 1.70x float32), lose from 64.
constexpr int kFewTileRows = 4, kSplitRows = 2;
constexpr int64_t kFewRows = 32;
#else
using Words = __m256i;
inline Words load_words(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline Vec even_of(const Words& w) { return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)); }
inline Vec odd_of(const Words& w) {
  return _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}
// Of the 16 registers: 3 x 4 accumulators (half a panel) + weight + broadcast; one row inline (8).
constexpr int kTileRows = 3, kTileRegs = 4;
constexpr int kFewTileRows = 1, kSplitRows = 0;
constexpr int64_t kFewRows = 4;
#endif
constexpr int64_t kTileCols = kTileRegs * kLanes;
constexpr int64_t kMaxBlock = 1024;  // input features per block of a widened panel (even)

// Decode reads each weight once, from memory: the inline tiles ask for the lines kPrefetchBytes ahead of
// the 4 lines a step reads (panels are contiguous, so this runs into the next panel; a prefetch past the
// end is harmless). 4 KB: one row 1.26-1.49x -> 1.46-1.72x float32, 8 rows 2.2-3.4x -> 2.6-4.1x (no
// prefetch, 1, 4 and 8 KB measured).
constexpr int64_t kPrefetchBytes = 4096;
inline void prefetch_ahead(const void* step) {
  const char* ahead = static_cast<const char*>(step) + kPrefetchBytes;
  for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
}

// The register tiles below write their sums to a buffer ([R][64]) and the caller adds the bias and
// stores them: with that epilogue in the same body, GCC 12 keeps the accumulators on the stack through
// the loop. Their small loops have constant trip counts and are unrolled, so the accumulators stay in
// registers.

// R rows of x against one packed panel ([ceil(K / 2)][64] words), widening in the loop -> sums [R][64].
template <int R>
__attribute__((noinline)) void few_rows_tile(const float* x, int64_t ldx, int64_t k, const uint32_t* panel,
                                             float* sums) {
  constexpr int kSets = R <= kSplitRows ? 2 : 1;  // [0]: even features, [1]: odd features (when split)
  Vec acc[kSets][R][kPanelRegs];
  #pragma GCC unroll 16
  for (int s = 0; s < kSets; ++s)
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 16
      for (int64_t j = 0; j < kPanelRegs; ++j) acc[s][r][j] = Vec(0.f);
  const int64_t pairs = k / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    const uint32_t* words = panel + p * kCols;
    prefetch_ahead(words);
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kPanelRegs; ++j) {
      const Words w = load_words(words + j * kLanes);
      const Vec even = even_of(w), odd = odd_of(w);
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        acc[0][r][j] = at::vec::fmadd(Vec(x[r * ldx + 2 * p]), even, acc[0][r][j]);
        acc[kSets - 1][r][j] = at::vec::fmadd(Vec(x[r * ldx + 2 * p + 1]), odd, acc[kSets - 1][r][j]);
      }
    }
  }
  if (k % 2 != 0) {  // the last word holds one feature (its odd half is padding; x has no element there)
    const uint32_t* words = panel + pairs * kCols;
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kPanelRegs; ++j) {
      const Vec even = even_of(load_words(words + j * kLanes));
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[0][r][j] = at::vec::fmadd(Vec(x[r * ldx + k - 1]), even, acc[0][r][j]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kPanelRegs; ++j) {
      const Vec sum = kSets == 2 ? acc[0][r][j] + acc[kSets - 1][r][j] : acc[0][r][j];
      sum.store(sums + r * kCols + j * kLanes);
    }
}

// A panel widened to float32: [k][64], row i = input feature i.
void widen_panel(const uint32_t* panel, int64_t k, float* wide) {
  const int64_t pairs = ceil_div(k, 2);
  for (int64_t p = 0; p < pairs; ++p) {
    for (int64_t j = 0; j < kPanelRegs; ++j) {
      const Words w = load_words(panel + p * kCols + j * kLanes);
      even_of(w).store(wide + (2 * p) * kCols + j * kLanes);
      if (2 * p + 1 < k) odd_of(w).store(wide + (2 * p + 1) * kCols + j * kLanes);
    }
  }
}

// R rows of x against kTileCols columns of a widened panel -> sums [R][64] (at the same columns), or
// added to them (accumulate): one FMA per weight register per row.
template <int R>
__attribute__((noinline)) void wide_tile(const float* x, int64_t ldx, int64_t k, const float* wide, float* sums,
                                         bool accumulate) {
  Vec acc[R][kTileRegs];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kTileRegs; ++j)
      acc[r][j] = accumulate ? Vec::loadu(sums + r * kCols + j * kLanes) : Vec(0.f);
  for (int64_t i = 0; i < k; ++i) {
    Vec w[kTileRegs];
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kTileRegs; ++j) w[j] = Vec::loadu(wide + i * kCols + j * kLanes);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Vec a(x[r * ldx + i]);
      #pragma GCC unroll 16
      for (int64_t j = 0; j < kTileRegs; ++j) acc[r][j] = at::vec::fmadd(a, w[j], acc[r][j]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int64_t j = 0; j < kTileRegs; ++j) acc[r][j].store(sums + r * kCols + j * kLanes);
}

// out[r, 0 : valid) = sums[r] + bias for `rows` rows `ldo` apart.
void store_tile(const float* sums, int rows, const float* bias, float* out, int64_t ldo, int64_t valid) {
  for (int r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < valid; c += kLanes) {
      const int64_t count = std::min<int64_t>(kLanes, valid - c);
      Vec v = Vec::loadu(sums + r * kCols + c);
      if (bias != nullptr) v = v + Vec::loadu(bias + c, count);
      v.store(out + r * ldo + c, count);
    }
  }
}

// f(std::integral_constant<int, rows>) for a run-time rows in [1, Max]: register tiles need R at compile time.
template <int Max, int R = 1, typename F>
inline void with_rows(int rows, const F& f) {
  if constexpr (R < Max) {
    if (rows != R) return with_rows<Max, R + 1>(rows, f);
  }
  f(std::integral_constant<int, R>{});
}

#ifdef VLMZOO_VEC_AVX512
// The AMX path: tasks are (panel, chunk of kAmxRows rows); each brgemm writes [rows][64] floats to a
// scratch tile, which store_tile adds the bias to and stores.
constexpr int64_t kAmxRows = 32;
void amx_rows(const at::Tensor& x, const c10::BFloat16* packed, int64_t panels, int64_t n, const float* bp, float* op) {
  const int64_t m = x.size(0), k = x.size(1), kp = ceil_div(k, kBf16Group) * kBf16Group;
  // Rounded to nearest even, zero-padded to the packing's even K (the padded weight row is zero too).
  auto xb = x.to(at::kBFloat16);
  if (kp != k) xb = at::constant_pad_nd(xb, {0, kp - k});
  xb = xb.contiguous();
  const c10::BFloat16* xbp = xb.data_ptr<c10::BFloat16>();
  const int64_t chunks = ceil_div(m, kAmxRows), panel_elems = kp * kCols;
  at::parallel_for(0, panels * chunks, 1, [&](int64_t begin, int64_t end) {
    float* tile = scratch<float>(kAmxRows * kCols);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks, r0 = (t % chunks) * kAmxRows, rows = std::min(kAmxRows, m - r0);
      gemm(rows, kCols, kp, xbp + r0 * kp, kp, packed + p * panel_elems, kCols, tile, kCols, /*add=*/false);
      store_tile(tile, static_cast<int>(rows), bp ? bp + p * kCols : nullptr, op + r0 * n + p * kCols, n,
                 std::min(kCols, n - p * kCols));
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/true);  // hand the AMX tiles back
  });
}
#endif

}  // namespace

// x: [M, K] float32, unit stride along K; packed: [ceil(N / 64), ceil(K / 2), 64, 2] bfloat16.
at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                       const std::optional<at::Tensor>& bias) {
  const int64_t m = x.size(0), k = x.size(1), n = out_features, ldx = x.stride(0);
  auto out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  const float* xp = x.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const auto* words = reinterpret_cast<const uint32_t*>(packed.data_ptr<c10::BFloat16>());
  const int64_t panels = packed.size(0), panel_words = packed.size(1) * kCols;
  auto panel_bias = [&](int64_t p) { return bp ? bp + p * kCols : bp; };

  if (m <= kFewRows) {
    at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
      alignas(64) float sums[kFewTileRows * kCols];
      for (int64_t p = begin; p < end; ++p) {
        for (int64_t r0 = 0; r0 < m; r0 += kFewTileRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kFewTileRows, m - r0));
          with_rows<kFewTileRows>(rows, [&](auto r) {
            few_rows_tile<decltype(r)::value>(xp + r0 * ldx, ldx, k, words + p * panel_words, sums);
          });
          store_tile(sums, rows, panel_bias(p), op + r0 * n + p * kCols, n, std::min(kCols, n - p * kCols));
        }
      }
    });
    return out;
  }
#ifdef VLMZOO_VEC_AVX512
  if (m > kBf16ExactRows && bf16_amx()) {
    amx_rows(x, packed.data_ptr<c10::BFloat16>(), panels, n, bp, op);
    return out;
  }
#endif
  // Tasks are (panel, row chunk), panel-major: a thread's consecutive tasks share a widened panel.
  // Row chunks only split the rows when there are too few panels to keep every thread busy.
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = std::min(ceil_div(m, kTileRows), ceil_div(4 * threads, panels));
  const int64_t chunk_rows = ceil_div(ceil_div(m, chunks), kTileRows) * kTileRows;
  const int64_t chunks_used = ceil_div(m, chunk_rows);
  // A long K is taken in blocks, the row tiles' partial sums kept between them, so the widened block
  // (at most kMaxBlock x 64 floats, 256 KB) stays in L2 beside the x rows.
  const int64_t blocks = ceil_div(k, kMaxBlock), block = ceil_div(ceil_div(k, blocks), 2) * 2;
  at::parallel_for(0, panels * chunks_used, 1, [&](int64_t begin, int64_t end) {
    float* wide = scratch<float>(block * kCols + chunk_rows * kCols);
    float* partial = wide + block * kCols;  // [chunk_rows][64]
    int64_t widened = -1;                   // the panel in `wide`, when it holds a whole panel
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks_used, chunk = t % chunks_used;
      const int64_t row_begin = chunk * chunk_rows, row_end = std::min(m, row_begin + chunk_rows);
      const int64_t valid = std::min(kCols, n - p * kCols);
      for (int64_t k0 = 0; k0 < k; k0 += block) {
        const int64_t length = std::min(block, k - k0);
        if (blocks > 1 || p != widened) widen_panel(words + p * panel_words + (k0 / 2) * kCols, length, wide);
        widened = blocks > 1 ? -1 : p;
        for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kTileRows, row_end - r0));
          float* sums = partial + (r0 - row_begin) * kCols;
          for (int64_t c0 = 0; c0 < valid; c0 += kTileCols) {
            with_rows<kTileRows>(rows, [&](auto r) {
              wide_tile<decltype(r)::value>(xp + r0 * ldx + k0, ldx, length, wide + c0, sums + c0, k0 > 0);
            });
          }
        }
      }
      for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows)
        store_tile(partial + (r0 - row_begin) * kCols, static_cast<int>(std::min<int64_t>(kTileRows, row_end - r0)),
                   panel_bias(p), op + r0 * n + p * kCols, n, valid);
    }
  });
  return out;
}

#endif
}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
