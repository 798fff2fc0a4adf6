// rms_norm and add_rms_norm on CPU: one row per step, two passes over a row that stays in L1.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// y = round_T(x * rsqrt(mean(x^2) + eps)) * w, with x = round_T(x + residual) when a residual is given
// (stored to sum). T: input type, O: output type (T, or acc_t<T> when the weight is wider).
template <typename T, typename O>
void rms_norm_rows(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                   const at::Tensor& sum, const at::Tensor& y) {
  using V = AccVec<T>;
  using A = acc_t<T>;
  constexpr int64_t n = V::size();
  const int64_t rows = x.size(0), D = x.size(1);
  const bool add = residual.defined();
  const T* xp = x.const_data_ptr<T>();
  const T* rp = add ? residual.const_data_ptr<T>() : nullptr;
  T* sp = add ? sum.mutable_data_ptr<T>() : nullptr;
  const A* wp = weight.const_data_ptr<A>();
  O* yp = y.mutable_data_ptr<O>();
  const int64_t xs = x.stride(0), rs = add ? residual.stride(0) : 0;
  const A inv_d = A(1) / static_cast<A>(D);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* xr = xp + row * xs;
      V squares(0);
      if (add) {
        const T* rr = rp + row * rs;
        T* sr = sp + row * D;
        for (int64_t j = 0; j < D; j += n) {
          const int64_t c = std::min(n, D - j);
          auto v = round_to<T>(load(xr + j, c) + load(rr + j, c));
          store(sr + j, v, c);
          squares = at::vec::fmadd(v, v, squares);
        }
        xr = sr;
      } else {
        for (int64_t j = 0; j < D; j += n) {
          auto v = load(xr + j, std::min(n, D - j));
          squares = at::vec::fmadd(v, v, squares);
        }
      }
      const V r(A(1) / std::sqrt(reduce_sum<T>(squares) * inv_d + static_cast<A>(eps)));
      O* yr = yp + row * D;
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        store(yr + j, round_to<T>(load(xr + j, c) * r) * V::loadu(wp + j, c), c);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rms_norm(const at::Tensor& x_in, const at::Tensor& residual_in,
                                            const at::Tensor& weight, double eps) {
  auto x = as_rows(x_in);
  auto residual = residual_in.defined() ? as_rows(residual_in) : at::Tensor();
  const auto out_type = rms_norm_out_type(x_in, weight);
  auto sum = residual.defined() ? empty_contiguous(x_in) : at::Tensor();
  auto y = empty_contiguous(x_in, out_type);
  auto sum_rows = sum.defined() ? sum.view({-1, x.size(1)}) : sum;
  auto y_rows = y.view({-1, x.size(1)});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::rms_norm", [&] {
    using A = acc_t<scalar_t>;
    auto w = weight.to(c10::CppTypeToScalarType<A>::value).contiguous();
    if (out_type == x.scalar_type()) {
      rms_norm_rows<scalar_t, scalar_t>(x, residual, w, eps, sum_rows, y_rows);
    } else {
      TORCH_CHECK(out_type == c10::CppTypeToScalarType<A>::value, "vlmzoo::rms_norm: a ", weight.scalar_type(),
                  " weight on ", x.scalar_type(), " input is not supported by the CPU kernel");
      rms_norm_rows<scalar_t, A>(x, residual, w, eps, sum_rows, y_rows);
    }
  });
  return {sum, y};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
