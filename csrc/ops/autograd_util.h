#pragma once
// Small ATen helpers shared by the Autograd kernels (backward passes are ATen composites, so they
// run on every backend, trace under fake tensors and are themselves differentiable) and the reference ops.
#include <ATen/ATen.h>

namespace vlmzoo::ops {

// float32 for reduced types, float64 stays float64.
inline at::ScalarType compute_type(const at::Tensor& x) { return at::promote_types(x.scalar_type(), at::kFloat); }

// x: [..., d] -> cat(-x2, x1) over its two halves: RoPE's rotation of the channel pairs (i, i + d/2).
inline at::Tensor rotate_half(const at::Tensor& x) {
  auto half = x.sym_size(-1) / 2;
  return at::cat({-x.narrow_symint(-1, half, half), x.narrow_symint(-1, 0, half)}, -1);
}

// t: [..., D] -> [D], summed over every leading dimension.
inline at::Tensor sum_leading(const at::Tensor& t) { return t.dim() == 1 ? t : t.flatten(0, t.dim() - 2).sum(0); }

// Undefined -> std::nullopt (Function::apply only tracks plain Tensors, so optional inputs travel as Tensors).
inline std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace vlmzoo::ops
