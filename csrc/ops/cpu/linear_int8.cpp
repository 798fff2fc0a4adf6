// linear_int8: per-token uint8 activations x per-channel int8 weights on vpdpbusd (AVX512-VNNI), int32
// accumulation, float32 epilogue. Only the avx512 copy has it (the others leave the table entry null
// and the reference runs); the caller checks cpu_has_avx512_vnni() first.
//   1. Each row of x is quantised to uint8 with its own scale and zero point (the float32 operations
//      of quantize_rows_uint8 in ops/linear_formats.h, in the same order: identical integers).
//   2. A register tile of 6 rows x 64 columns runs over a packed panel: per group of 4 input features,
//      one broadcast of the row's 4 bytes and one vpdpbusd per 16 columns (24 int32 accumulators).
//   3. out = float(acc - zero_point * col_sum) * (scale_x * scale_w) + bias, stored in float32.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernel_util.h"
#include "ops/linear_formats.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
#ifdef VLMZOO_VEC_AVX512
// The helpers add VNNI to the copy's target; the exported kernel below keeps the copy's own target (a
// definition whose target differs from its declaration's would become a separate, unnamed clone).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
namespace {
constexpr int64_t kCols = kInt8PanelCols;  // 4 registers of 16 int32 columns
constexpr int64_t kGroup = kInt8Group;
constexpr int kTileRows = 6;  // 6 x 4 accumulators + 4 weights + 1 broadcast of the 32 registers
// Decode tiles prefetch this far ahead in the panels (contiguous; a prefetch past the end is harmless).
constexpr int64_t kPrefetchBytes = 4096;

// Row of x ([k] float32) -> [k_padded] uint8 (padding 0), its scale and zero point. A row holding a NaN
// gets a NaN scale, so its outputs are NaN (as the reference's and F.linear's), not quantised garbage.
void quantize_row(const float* x, int64_t k, int64_t k_padded, uint8_t* q, float* scale_out, int32_t* zero_out) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();  // 0 is always in the range
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  const __mmask16 tail = static_cast<__mmask16>((1u << (k - i)) - 1);
  if (k > i) {
    const __m512 v = _mm512_maskz_loadu_ps(tail, x + i);  // zeros elsewhere: in the range already
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  const float low = _mm512_reduce_min_ps(lo), high = _mm512_reduce_max_ps(hi);
  float scale = (high - low) / 255.0f;
  if (!(scale > 0)) scale = 1.0f;
  const float inv = 1.0f / scale;
  const int32_t zero = nan ? 0 : static_cast<int32_t>(std::nearbyint(-low * inv));
  if (nan) scale = std::numeric_limits<float>::quiet_NaN();
  const __m512 inv_v = _mm512_set1_ps(inv);
  const __m512i zero_v = _mm512_set1_epi32(zero), top = _mm512_set1_epi32(255), bottom = _mm512_setzero_si512();
  auto quantize = [&](const __m512& v) {  // round(v * inv) + zero (cvtps rounds to nearest even), clamped
    const __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv_v)), zero_v);
    return _mm512_min_epi32(_mm512_max_epi32(r, bottom), top);
  };
  for (i = 0; i + 16 <= k; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(quantize(_mm512_loadu_ps(x + i))));
  if (k > i) _mm512_mask_cvtepi32_storeu_epi8(q + i, tail, quantize(_mm512_maskz_loadu_ps(tail, x + i)));
  for (int64_t p = k; p < k_padded; ++p) q[p] = 0;  // against zero weights: any value would do
  *scale_out = scale;
  *zero_out = zero;
}

struct Epilogue {
  const float* x_scale;     // [M]
  const int32_t* x_zero;    // [M]
  const float* w_scale;     // [N]
  const int32_t* col_sums;  // [N]
  const float* bias;        // [N] or null
  float* out;               // [M, N]
  int64_t n;
};

// R rows (quantised, `ldq` bytes apart, groups of 4 features) x one packed panel ([groups][64][4] int8)
// -> sums [R][64] int32. Prefetch: set for the first tile over a panel, which reads it from memory.
// Its own (never inlined) function: with the epilogue in the same body, GCC 12 keeps the 24
// accumulators on the stack through the loop.
template <int R, bool Prefetch>
__attribute__((noinline)) void accumulate(const uint8_t* q, int64_t ldq, int64_t groups, const int8_t* panel,
                                          int32_t* sums) {
  __m512i acc[R][4];
  // Constant trip counts, unrolled: the accumulators stay in registers.
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* w = panel + g * kCols * kGroup;
    if constexpr (Prefetch) {
      for (int line = 0; line < 4; ++line)
        _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchBytes + 64 * line, _MM_HINT_T0);
    }
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
    const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      int32_t four;
      std::memcpy(&four, q + r * ldq + g * kGroup, sizeof(four));
      const __m512i a = _mm512_set1_epi32(four);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], a, w0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], a, w1);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], a, w2);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], a, w3);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) _mm512_storeu_si512(sums + r * kCols + 16 * j, acc[r][j]);
}

// out[row0 + r, col0 + c] = float(sums[r][c] - zero_point[r] * col_sum[c]) * (scale_x[r] * scale_w[c]) + bias[c].
void epilogue(const int32_t* sums, int rows, int64_t row0, int64_t col0, const Epilogue& e) {
  const int64_t valid = std::min<int64_t>(kCols, e.n - col0);
  for (int r = 0; r < rows; ++r) {
    const __m512i zero = _mm512_set1_epi32(e.x_zero[row0 + r]);
    const __m512 x_scale = _mm512_set1_ps(e.x_scale[row0 + r]);
    float* out = e.out + (row0 + r) * e.n + col0;
    for (int64_t c = 0; c < valid; c += 16) {
      const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, valid - c)) - 1);
      const __m512i col_sums = _mm512_maskz_loadu_epi32(mask, e.col_sums + col0 + c);
      const __m512 w_scale = _mm512_maskz_loadu_ps(mask, e.w_scale + col0 + c);
      const __m512i dots = _mm512_loadu_si512(sums + r * kCols + c);
      const __m512i exact = _mm512_sub_epi32(dots, _mm512_mullo_epi32(zero, col_sums));
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(x_scale, w_scale));
      if (e.bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, e.bias + col0 + c));
      _mm512_mask_storeu_ps(out + c, mask, v);
    }
  }
}

template <int Max, int R = 1, typename F>
inline void with_rows(int rows, const F& f) {
  if constexpr (R < Max) {
    if (rows != R) return with_rows<Max, R + 1>(rows, f);
  }
  f(std::integral_constant<int, R>{});
}

at::Tensor linear_int8_vnni(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                            const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  const int64_t m = x.size(0), k = x.size(1), n = scales.size(0), ldx = x.stride(0);
  const int64_t groups = packed.size(1), k_padded = groups * kGroup, panels = packed.size(0);
  auto out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  // One buffer: the rows' scales [m] float32, zero points [m] int32, then the quantised rows [m][k_padded].
  auto buffer = at::empty({m * (8 + k_padded)}, x.options().dtype(at::kByte));
  float* sp = reinterpret_cast<float*>(buffer.data_ptr<uint8_t>());
  int32_t* zp = reinterpret_cast<int32_t*>(sp + m);
  uint8_t* qp = reinterpret_cast<uint8_t*>(zp + m);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, m, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize_row(xp + r * ldx, k, k_padded, qp + r * k_padded, sp + r, zp + r);
  });

  const Epilogue e{sp, zp, scales.data_ptr<float>(), col_sums.data_ptr<int32_t>(),
                   bias.has_value() ? bias->data_ptr<float>() : nullptr, out.data_ptr<float>(), n};
  const int8_t* wp = packed.data_ptr<int8_t>();
  const int64_t panel_bytes = groups * kCols * kGroup;
  // Tasks are (panel, row chunk), panel-major; rows are split only when panels are too few for the threads.
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = std::min(ceil_div(m, kTileRows), ceil_div(4 * threads, panels));
  const int64_t chunk_rows = ceil_div(ceil_div(m, chunks), kTileRows) * kTileRows;
  const int64_t chunks_used = ceil_div(m, chunk_rows);
  at::parallel_for(0, panels * chunks_used, 1, [&](int64_t begin, int64_t end) {
    alignas(64) int32_t sums[kTileRows * kCols];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p = t / chunks_used, chunk = t % chunks_used;
      const int64_t row_end = std::min(m, (chunk + 1) * chunk_rows);
      for (int64_t r0 = chunk * chunk_rows; r0 < row_end; r0 += kTileRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, row_end - r0));
        with_rows<kTileRows>(rows, [&](auto r) {
          constexpr int R = decltype(r)::value;
          const int8_t* panel = wp + p * panel_bytes;
          const uint8_t* rows_q = qp + r0 * k_padded;
          if (r0 == chunk * chunk_rows) accumulate<R, true>(rows_q, k_padded, groups, panel, sums);
          else accumulate<R, false>(rows_q, k_padded, groups, panel, sums);
        });
        epilogue(sums, rows, r0, p * kCols, e);
      }
    }
  });
  return out;
}
}  // namespace
#pragma GCC pop_options

// x: [M, K] float32, unit stride along K; packed: [ceil(N / 64), ceil(K / 4), 64, 4] int8;
// scales: float32 [N]; col_sums: int32 [N].
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  return linear_int8_vnni(x, packed, scales, col_sums, bias);
}

#endif
}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
