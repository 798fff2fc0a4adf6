// The kernels of this copy (one per instruction set, see vec.h) as one table for cpu/dispatch.cpp.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {

#if defined(VLMZOO_VEC_AVX512) || defined(VLMZOO_VEC_AVX2)
constexpr LinearBf16Fn* kLinearBf16 = &linear_bf16;
#else
constexpr LinearBf16Fn* kLinearBf16 = nullptr;
#endif
#ifdef VLMZOO_VEC_AVX512
constexpr LinearInt8Fn* kLinearInt8 = &linear_int8;  // vpdpbusd (AVX512-VNNI)
#else
constexpr LinearInt8Fn* kLinearInt8 = nullptr;
#endif

const Kernels kernels{&rms_norm,  &layer_norm,         &bias_act,   &gated_act, &rope,
                      &attention, &attention_backward, kLinearBf16, kLinearInt8};

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
