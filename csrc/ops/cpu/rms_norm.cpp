// rms_norm and add_rms_norm on CPU: one row per step, two passes over a row that stays in L1.
// add_rms_norm takes x and residual of different dtypes (see check_add_rms_norm for the rule).
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// y = round_S(x * rsqrt(mean(x^2) + eps)) * w, with x = round_S(x + residual) when a residual is given
// (stored to sum). X, R: input and residual types; S: the sum's type (X when there is no residual);
// O: output type (S, or acc_t<S> when the weight is wider). X, R and S share acc_t.
template <typename X, typename R, typename S, typename O>
void rms_norm_rows(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                   const at::Tensor& sum, const at::Tensor& y) {
  static_assert(std::is_same_v<acc_t<X>, acc_t<S>> && std::is_same_v<acc_t<R>, acc_t<S>>);
  using V = AccVec<S>;
  using A = acc_t<S>;
  constexpr int64_t n = V::size();
  const int64_t rows = x.size(0), D = x.size(1);
  const bool add = residual.defined();
  const X* xp = x.const_data_ptr<X>();
  const R* rp = add ? residual.const_data_ptr<R>() : nullptr;
  S* sp = add ? sum.mutable_data_ptr<S>() : nullptr;
  const A* wp = weight.const_data_ptr<A>();
  O* yp = y.mutable_data_ptr<O>();
  const int64_t xs = x.stride(0), rs = add ? residual.stride(0) : 0;
  const A inv_d = A(1) / static_cast<A>(D);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      O* yr = yp + row * D;
      // Second pass over the row (src: the stored sum, or x): normalise, round to S, scale.
      auto normalise = [&](const auto* src, const V& r) {
        for (int64_t j = 0; j < D; j += n) {
          const int64_t c = std::min(n, D - j);
          store(yr + j, round_to<S>(load(src + j, c) * r) * V::loadu(wp + j, c), c);
        }
      };
      const X* xr = xp + row * xs;
      V squares(0);
      if (add) {
        const R* rr = rp + row * rs;
        S* sr = sp + row * D;
        for (int64_t j = 0; j < D; j += n) {
          const int64_t c = std::min(n, D - j);
          auto v = round_to<S>(load(xr + j, c) + load(rr + j, c));
          store(sr + j, v, c);
          squares = at::vec::fmadd(v, v, squares);
        }
        normalise(static_cast<const S*>(sr),
                  V(A(1) / std::sqrt(reduce_sum<S>(squares) * inv_d + static_cast<A>(eps))));
      } else {
        for (int64_t j = 0; j < D; j += n) {
          auto v = load(xr + j, std::min(n, D - j));
          squares = at::vec::fmadd(v, v, squares);
        }
        normalise(xr, V(A(1) / std::sqrt(reduce_sum<S>(squares) * inv_d + static_cast<A>(eps))));
      }
    }
  });
}

// Runs f(X{}) for the float32-accumulated types (float, bfloat16, half).
template <typename F>
void dispatch_float_acc(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat: f(float{}); break;
    case at::kBFloat16: f(c10::BFloat16{}); break;
    case at::kHalf: f(c10::Half{}); break;
    default: TORCH_CHECK(false, "vlmzoo::add_rms_norm: the mixed-dtype CPU kernel does not take ", t);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rms_norm(const at::Tensor& x_in, const at::Tensor& residual_in,
                                            const at::Tensor& weight, double eps) {
  auto x = as_rows(x_in);
  auto residual = residual_in.defined() ? as_rows(residual_in) : at::Tensor();
  const auto sum_type = residual.defined() ? add_rms_norm_sum_type(x_in, residual_in) : x_in.scalar_type();
  const auto out_type = rms_norm_out_type(sum_type, weight);
  auto sum = residual.defined() ? empty_contiguous(x_in, sum_type) : at::Tensor();
  auto y = empty_contiguous(x_in, out_type);
  auto sum_rows = sum.defined() ? sum.view({-1, x.size(1)}) : sum;
  auto y_rows = y.view({-1, x.size(1)});
  if (residual.defined() && residual.scalar_type() != x.scalar_type()) {
    // Mixed x / residual (both float32-accumulated): the sum, and so the output, is float32.
    TORCH_CHECK(sum_type == at::kFloat && out_type == at::kFloat, "vlmzoo::add_rms_norm: ", x.scalar_type(), " + ",
                residual.scalar_type(), " with a ", weight.scalar_type(), " weight is not supported by the CPU kernel");
    auto w = weight.to(at::kFloat).contiguous();
    dispatch_float_acc(x.scalar_type(), [&](auto x_tag) {
      dispatch_float_acc(residual.scalar_type(), [&](auto r_tag) {
        using X = decltype(x_tag);
        using R = decltype(r_tag);
        rms_norm_rows<X, R, float, float>(x, residual, w, eps, sum_rows, y_rows);
      });
    });
    return {sum, y};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::rms_norm", [&] {
    using A = acc_t<scalar_t>;
    auto w = weight.to(c10::CppTypeToScalarType<A>::value).contiguous();
    if (out_type == x.scalar_type()) {
      rms_norm_rows<scalar_t, scalar_t, scalar_t, scalar_t>(x, residual, w, eps, sum_rows, y_rows);
    } else {
      TORCH_CHECK(out_type == c10::CppTypeToScalarType<A>::value, "vlmzoo::rms_norm: a ", weight.scalar_type(),
                  " weight on ", x.scalar_type(), " input is not supported by the CPU kernel");
      rms_norm_rows<scalar_t, scalar_t, scalar_t, A>(x, residual, w, eps, sum_rows, y_rows);
    }
  });
  return {sum, y};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
