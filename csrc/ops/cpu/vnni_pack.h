#pragma once
// bfloat16 B matrices in the VNNI layout that oneDNN's bf16 brgemm reads (what
// at::native::cpublas::pack writes for N <= 64): element (k, n) of a [K, N] matrix sits at
// ((k / 2) * N + n) * 2 + k % 2, so each 32-bit word holds rows 2i and 2i + 1 of one column.
// Written here because the attention kernel packs straight from strided K and V rows, where
// cpublas::pack first needs a contiguous (and, for K^T, transposed) copy.
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace vlmzoo::ops::cpu {
// Internal linkage: each kernel copy (vec.h compiles it per instruction set) keeps its own, so the
// linker never hands an AVX-512 build of these to the AVX2 copy.
namespace {

// B = K^T for `n_cols` keys ([d] each, rows `ld` apart): B[c, j] = keys[j, c], K dim d (even), into
// columns [0, n_cols) of a packed matrix with N = ld_out. Columns j >= valid are zeros.
inline void pack_keys_transposed_vnni(const c10::BFloat16* keys, int64_t valid, int64_t ld, int64_t d,
                                      int64_t n_cols, int64_t ld_out, c10::BFloat16* out) {
  auto* out32 = reinterpret_cast<uint32_t*>(out);  // [d / 2, ld_out]
  for (int64_t j = 0; j < n_cols; ++j) {
    if (j >= valid) {
      for (int64_t c2 = 0; c2 < d / 2; ++c2) out32[c2 * ld_out + j] = 0;
      continue;
    }
    const c10::BFloat16* row = keys + j * ld;
    for (int64_t c2 = 0; c2 < d / 2; ++c2) {
      uint32_t pair;
      std::memcpy(&pair, row + 2 * c2, sizeof(pair));  // (c, c + 1) of key j: one word
      out32[c2 * ld_out + j] = pair;
    }
  }
}

// B = rows [k_rows, width] (rows `ld` apart, columns from `rows[0]`), k_rows even; rows >= valid are zeros.
inline void pack_rows_vnni(const c10::BFloat16* rows, int64_t valid, int64_t k_rows, int64_t ld, int64_t width,
                           c10::BFloat16* out) {
  auto* out32 = reinterpret_cast<uint32_t*>(out);  // [k_rows / 2, width]
  for (int64_t i = 0; i < k_rows / 2; ++i) {
    const int64_t even = 2 * i, odd = 2 * i + 1;
    for (int64_t c = 0; c < width; ++c) {
      const uint32_t lo = even < valid ? rows[even * ld + c].x : 0;
      const uint32_t hi = odd < valid ? rows[odd * ld + c].x : 0;
      out32[i * width + c] = lo | (hi << 16);
    }
  }
}

}  // namespace
}  // namespace vlmzoo::ops::cpu
