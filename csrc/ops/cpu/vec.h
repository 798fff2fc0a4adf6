#pragma once
// Include this first in every CPU kernel file (and nowhere else): it picks the instruction set the
// file's kernels are compiled for. CMake compiles each kernel file once per instruction set in
// VLMZOO_CPU_ISAS, defining VLMZOO_CPU_CAPABILITY_<ISA> for that copy (like ATen's CPU_CAPABILITY);
// here it becomes the compiler target, the ISA macros that sleef.h and ATen's vec headers test, and
// VLMZOO_CPU_ISA_NS, the namespace of the copy (vlmzoo::ops::cpu::avx512 / avx2 / baseline). The
// copies' at::vec instantiations (inline namespaces at::vec::AVX512 / AVX2) and our own helpers
// thus never share a name. cpu/dispatch.cpp picks the copy the running CPU can execute.

// Headers without ISA-specific code come before the target pragma, so the inline functions they
// define are compiled for the baseline like everywhere else in the build: the linker keeps one copy
// of such a function for the whole library, and it must not be one that needs AVX-512.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/checks.h"

#if defined(VLMZOO_CPU_CAPABILITY_AVX512) || defined(VLMZOO_CPU_CAPABILITY_AVX2)
#if !defined(__x86_64__) || !(defined(__GNUC__) || defined(__clang__))
#error "the avx512 and avx2 kernel copies need x86-64 and GCC or Clang (set VLMZOO_CPU_ISAS=baseline)"
#endif
#ifdef VLMZOO_CPU_CAPABILITY_AVX512
#define VLMZOO_CPU_ISA_NS avx512
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define VLMZOO_VEC_AVX512 1
// GCC 12 flags the deliberately undefined registers (_mm256_undefined_*) inside its own intrinsics
// (_mm512_cvtps_ph, the _mm512_reduce_* shuffles).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#else
#define VLMZOO_CPU_ISA_NS avx2
#pragma GCC target("avx2,fma,f16c")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define VLMZOO_VEC_AVX2 1
#endif
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
#ifdef VLMZOO_VEC_AVX512
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
#endif
#elif defined(VLMZOO_CPU_CAPABILITY_BASELINE)
// Whatever the rest of the build targets (non-x86 machines): ATen's default vector width there.
#define VLMZOO_CPU_ISA_NS baseline
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif
#else
#error "compile the CPU kernels through CMake: it defines VLMZOO_CPU_CAPABILITY_<ISA> for each copy"
#endif
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {

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

#if defined(VLMZOO_VEC_AVX512) || defined(VLMZOO_VEC_AVX2)
// One register of floats <-> as many bfloat16/half in a register of half the width (round to nearest even).
#ifdef VLMZOO_VEC_AVX512
using FloatReg = __m512;
using ReducedReg = __m256i;  // 16 values
inline void store_reduced(void* p, const ReducedReg& r) { _mm256_storeu_si256(static_cast<__m256i*>(p), r); }
#else
using FloatReg = __m256;
using ReducedReg = __m128i;  // 8 values
inline void store_reduced(void* p, const ReducedReg& r) { _mm_storeu_si128(static_cast<__m128i*>(p), r); }
#endif
template <typename T>
inline ReducedReg to_reduced(const at::vec::Vectorized<float>& v) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) return at::vec::cvtfp32_bf16(FloatReg(v));
  else return at::vec::cvtfp32_fp16(FloatReg(v));
}
template <typename T>
inline at::vec::Vectorized<float> from_reduced(const ReducedReg& r) {
  FloatReg out;
  if constexpr (std::is_same_v<T, c10::BFloat16>) at::vec::cvtbf16_fp32(r, out);
  else at::vec::cvtfp16_fp32(r, out);
  return out;
}
#define VLMZOO_VEC_REDUCED_REG 1
#endif

// Stores the first `count` lanes of v as T (rounding to nearest even for bfloat16/half).
template <typename T>
inline void store(T* p, const AccVec<T>& v, int64_t count = AccVec<T>::size()) {
  if constexpr (is_reduced<T>) {
#ifdef VLMZOO_VEC_REDUCED_REG
    if (count >= AccVec<T>::size()) {
      store_reduced(p, to_reduced<T>(v));
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
#ifdef VLMZOO_VEC_REDUCED_REG
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

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
