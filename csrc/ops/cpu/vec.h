#pragma once
// Include this first in every CPU kernel file (and nowhere else): it compiles the file's kernels for
// AVX-512 with at::vec::Vectorized, whatever flags the rest of the build uses. The registration in
// cpu/register.cpp calls these kernels only when the running CPU has AVX-512 (else the reference).
// The CPU_CAPABILITY inline namespace keeps these Vectorized instantiations apart from any others.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(VLMZOO_NO_AVX512)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
// GCC's target pragma does not define the ISA macros that sleef.h and ATen's vec headers test.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#endif
#define VLMZOO_VEC_AVX512 1
// GCC 12 flags the deliberately undefined registers (_mm256_undefined_*) inside its own intrinsics
// (_mm512_cvtps_ph, the _mm512_reduce_* shuffles).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <type_traits>

namespace vlmzoo::ops::cpu {

// Accumulation type: float for float/bfloat16/half, double for double.
template <typename T>
using acc_t = at::opmath_type<T>;
template <typename T>
using AccVec = at::vec::Vectorized<acc_t<T>>;

template <typename T>
constexpr bool is_reduced = std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

// Loads AccVec<T>::size() elements of T as acc_t<T>; `count` < size loads a tail, zero-filling the rest.
template <typename T>
inline AccVec<T> load(const T* p, int64_t count = AccVec<T>::size()) {
  if constexpr (is_reduced<T>) {
    at::vec::Vectorized<float> out;
    if (count >= AccVec<T>::size()) {
      at::vec::load_to_float<T>(p, out);
    } else {
      T buf[AccVec<T>::size()] = {};
      for (int64_t i = 0; i < count; ++i) buf[i] = p[i];
      at::vec::load_to_float<T>(buf, out);
    }
    return out;
  } else {
    return AccVec<T>::loadu(p, count);
  }
}

#ifdef VLMZOO_VEC_AVX512
// 16 floats <-> 16 bfloat16/half in one 256-bit register (round to nearest even).
template <typename T>
inline __m256i to_reduced(const at::vec::Vectorized<float>& v) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) return at::vec::cvtfp32_bf16(__m512(v));
  else return at::vec::cvtfp32_fp16(__m512(v));
}
template <typename T>
inline at::vec::Vectorized<float> from_reduced(const __m256i& r) {
  __m512 out;
  if constexpr (std::is_same_v<T, c10::BFloat16>) at::vec::cvtbf16_fp32(r, out);
  else at::vec::cvtfp16_fp32(r, out);
  return out;
}
#endif

// Stores the first `count` lanes of v as T (rounding to nearest even for bfloat16/half).
template <typename T>
inline void store(T* p, const AccVec<T>& v, int64_t count = AccVec<T>::size()) {
  if constexpr (is_reduced<T>) {
#ifdef VLMZOO_VEC_AVX512
    if (count >= AccVec<T>::size()) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_reduced<T>(v));
      return;
    }
#endif
    at::vec::convert_from_float<T>(v, v).store(p, std::min<int64_t>(count, AccVec<T>::size()));
  } else {
    v.store(p, count);
  }
}

// v rounded to T's precision and back, to reproduce what an unfused composite stores in between.
template <typename T>
inline AccVec<T> round_to(const AccVec<T>& v) {
  if constexpr (is_reduced<T>) {
#ifdef VLMZOO_VEC_AVX512
    return from_reduced<T>(to_reduced<T>(v));
#else
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(v, v)));
#endif
  } else {
    return v;
  }
}

// Horizontal max / sum of one vector (AVX-512 float: the single intrinsic, which also spares GCC 12's
// false "used uninitialized" on the shuffles of the generic vec_reduce_all).
template <typename A>
inline A lanes_max(const at::vec::Vectorized<A>& v) {
#ifdef VLMZOO_VEC_AVX512
  if constexpr (std::is_same_v<A, float>) return _mm512_reduce_max_ps(__m512(v));
#endif
  return at::vec::vec_reduce_all<A>([](const auto& x, const auto& y) { return at::vec::maximum(x, y); }, v);
}
template <typename A>
inline A lanes_sum(const at::vec::Vectorized<A>& v) {
#ifdef VLMZOO_VEC_AVX512
  if constexpr (std::is_same_v<A, float>) return _mm512_reduce_add_ps(__m512(v));
#endif
  return at::vec::vec_reduce_all<A>([](const auto& x, const auto& y) { return x + y; }, v);
}

template <typename T>
inline acc_t<T> reduce_sum(const AccVec<T>& v) {
  return at::vec::vec_reduce_all<acc_t<T>>([](const AccVec<T>& a, const AccVec<T>& b) { return a + b; }, v);
}

}  // namespace vlmzoo::ops::cpu
