#pragma once
// Pieces the attention kernels share (cpu/attention.cpp through attention_blocks.h, and
// cpu/attention_backward.cpp), included after vec.h: GEMM wrappers over oneDNN's brgemm, per-thread
// scratch, the fast exp and tensor strides. In the copy's namespace, like every kernel.
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// C[M, N] (+)= A[M, K] B[K, N], row-major with leading dimensions.
inline void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                 int64_t ldc, bool add) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, a, b, c, /*is_vnni=*/false);
}
// b in VNNI layout (cpu/vnni_pack.h), bf16 products accumulated in float: oneDNN brgemm on AMX / AVX512-BF16.
inline void gemm(int64_t M, int64_t N, int64_t K, const c10::BFloat16* a, int64_t lda, const c10::BFloat16* b,
                 int64_t ldb, float* c, int64_t ldc, bool add) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, a, b, c, /*is_vnni=*/true);
}
inline void gemm(int64_t M, int64_t N, int64_t K, const double* a, int64_t lda, const double* b, int64_t ldb,
                 double* c, int64_t ldc, bool add) {  // float64 serves gradcheck only: plain loops
  for (int64_t i = 0; i < M; ++i) {
    double* ci = c + i * ldc;
    if (!add) std::fill(ci, ci + N, 0.0);
    for (int64_t p = 0; p < K; ++p) {
      const double aip = a[i * lda + p];
      const double* bp = b + p * ldb;
      for (int64_t j = 0; j < N; ++j) ci[j] += aip * bp[j];
    }
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

}  // namespace
}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
