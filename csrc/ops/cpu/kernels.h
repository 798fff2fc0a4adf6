#pragma once
// The CPU kernels, through at::vec. Every kernel file is compiled once per instruction set (see vec.h
// and VLMZOO_CPU_ISAS in CMakeLists.txt), each copy in its own namespace vlmzoo::ops::cpu::<isa>
// with a table of its kernels; cpu/dispatch.cpp picks the table the running CPU can execute.
// Arguments are already checked by the caller (cpu/register.cpp); every result is a new contiguous tensor.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ops/checks.h"

namespace vlmzoo::ops::cpu {

// residual may be undefined (plain norm); then the first result is undefined too.
using RmsNormFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& x, const at::Tensor& residual,
                                                     const at::Tensor& weight, double eps);
// Rows whose token index (row % tokens) is < split use (weight_a, bias_a), the others (weight_b, bias_b).
// A plain layer norm is split == tokens.
using LayerNormFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& x, const at::Tensor& residual,
                                                       int64_t tokens, int64_t split, const at::Tensor& weight_a,
                                                       const std::optional<at::Tensor>& bias_a,
                                                       const at::Tensor& weight_b,
                                                       const std::optional<at::Tensor>& bias_b, double eps);
using BiasActFn = at::Tensor(const at::Tensor& x, const std::optional<at::Tensor>& bias, Act act);
using GatedActFn = at::Tensor(const at::Tensor& gate, const at::Tensor& up, Act act);
using RopeFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                  const at::Tensor& sin);
using AttentionFn = at::Tensor(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& allowed, double scale);
// (dq, dk, dv) of attention, given grad = dL/d(out) and the forward's out; tiled (no [Tq, Tk] matrix),
// float32 accumulation (float64 for float64).
using AttentionBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const std::optional<at::Tensor>& allowed, double scale);
// Linear layers on packed weights (ops/linear_formats.h). x: [M, K] float32 with unit stride along K;
// bias: float32 [N] or none; returns float32 [M, N]. A null entry in the table: the reference runs.
using LinearBf16Fn = at::Tensor(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                                const std::optional<at::Tensor>& bias);
using LinearInt8Fn = at::Tensor(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& col_sums, const std::optional<at::Tensor>& bias);

// One copy's kernels (cpu/kernel_table.cpp).
struct Kernels {
  RmsNormFn* rms_norm;
  LayerNormFn* layer_norm;
  BiasActFn* bias_act;
  GatedActFn* gated_act;
  RopeFn* rope;
  AttentionFn* attention;
  AttentionBackwardFn* attention_backward;
  LinearBf16Fn* linear_bf16;
  // Needs AVX512-VNNI on top of the copy's level: check cpu_has_avx512_vnni() (dispatch.h) before calling.
  LinearInt8Fn* linear_int8;
};

// The copies' tables; only those of the instruction sets built exist (cpu/dispatch.cpp knows which).
namespace avx512 {
extern const Kernels kernels;
}
namespace avx2 {
extern const Kernels kernels;
}
namespace baseline {
extern const Kernels kernels;
}

#ifdef VLMZOO_CPU_ISA_NS
// In a kernel file (vec.h defines the namespace): the kernels of the copy being compiled.
namespace VLMZOO_CPU_ISA_NS {
RmsNormFn rms_norm;
LayerNormFn layer_norm;
BiasActFn bias_act;
GatedActFn gated_act;
RopeFn rope;
AttentionFn attention;
AttentionBackwardFn attention_backward;
LinearBf16Fn linear_bf16;
LinearInt8Fn linear_int8;
}  // namespace VLMZOO_CPU_ISA_NS
#endif

}  // namespace vlmzoo::ops::cpu
