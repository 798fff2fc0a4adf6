// rms_norm_backward on CPU: dx (plus the residual stream's gradient, for add_rms_norm) and dweight in
// two passes over each row (sum of squares and <g w, x>, then dx), dweight summed per thread.
// With r = rsqrt(mean(x^2) + eps): dx = r g w - x r^3 <g w, x> / D, dweight = sum_rows g round(x r).
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include <ATen/Parallel.h>

#include <vector>

#include "ops/cpu/training_kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

template <typename T>
void backward_rows(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, double eps,
                   const at::Tensor& grad_sum, const at::Tensor& dx, std::vector<acc_t<T>>& dweight_parts) {
  using V = AccVec<T>;
  using A = acc_t<T>;
  constexpr int64_t n = V::size();
  const int64_t rows = x.size(0), D = x.size(1);
  const T* gp = grad.const_data_ptr<T>();
  const T* xp = x.const_data_ptr<T>();
  const T* sp = grad_sum.defined() ? grad_sum.const_data_ptr<T>() : nullptr;
  const A* wp = weight.const_data_ptr<A>();
  T* dp = dx.mutable_data_ptr<T>();
  const int64_t gs = grad.stride(0), xs = x.stride(0), ss = grad_sum.defined() ? grad_sum.stride(0) : 0;
  const A inv_d = A(1) / static_cast<A>(D);
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    A* dw = dweight_parts.data() + at::get_thread_num() * D;
    for (int64_t row = begin; row < end; ++row) {
      const T* gr = gp + row * gs;
      const T* xr = xp + row * xs;
      V squares(0), dot(0);
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        const V xv = load(xr + j, c);
        squares = at::vec::fmadd(xv, xv, squares);
        dot = at::vec::fmadd(load(gr + j, c) * V::loadu(wp + j, c), xv, dot);
      }
      const A r = A(1) / std::sqrt(reduce_sum<T>(squares) * inv_d + static_cast<A>(eps));
      const V vr(r), coef(r * r * r * reduce_sum<T>(dot) * inv_d);
      T* dr = dp + row * D;
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        const V xv = load(xr + j, c), gv = load(gr + j, c);
        V d = vr * gv * V::loadu(wp + j, c) - xv * coef;
        if (sp != nullptr) d = d + load(sp + row * ss + j, c);
        store(dr + j, d, c);
        at::vec::fmadd(gv, round_to<T>(xv * vr), V::loadu(dw + j, c)).store(dw + j, c);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rms_norm_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                     const at::Tensor& weight, double eps,
                                                     const std::optional<at::Tensor>& grad_sum_in) {
  auto grad = as_rows(grad_in), x = as_rows(x_in);
  auto grad_sum = grad_sum_in.has_value() ? as_rows(*grad_sum_in) : at::Tensor();
  auto dx = empty_contiguous(x_in);
  at::Tensor dweight;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::rms_norm_backward", [&] {
    using A = acc_t<scalar_t>;
    const int64_t D = x.size(1);
    std::vector<A> parts(static_cast<size_t>(at::get_num_threads() * D), A(0));
    backward_rows<scalar_t>(grad, x, weight.to(c10::CppTypeToScalarType<A>::value).contiguous(), eps, grad_sum,
                            dx.view({-1, D}), parts);
    auto parts_t = at::from_blob(parts.data(), {at::get_num_threads(), D},
                                 at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value));
    dweight = parts_t.sum(0).to(weight.scalar_type());
  });
  return {dx, dweight};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
