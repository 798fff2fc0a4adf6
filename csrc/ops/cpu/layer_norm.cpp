// layer_norm, add_layer_norm and multiway_layer_norm on CPU: three passes over a row in L1
// (mean, centred variance, normalise), with the weights chosen per row for the multiway case.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

template <typename A>
struct RowParams {
  const A* weight;
  const A* bias;  // may be null
};

// Where row r of x starts: x[r / inner][r % inner] of a [outer, inner, D] view whose rows need not be evenly
// spaced (a token range of a [B, T, D] sequence), read in place instead of copied into rows.
struct NormRowLayout {
  const at::Tensor& data;
  int64_t rows, D, inner, outer_stride, row_stride;
  int64_t offset(int64_t row) const { return (row / inner) * outer_stride + (row % inner) * row_stride; }
};

NormRowLayout norm_row_layout(const at::Tensor& x) {
  const int64_t D = x.size(-1), rows = D == 0 ? 0 : x.numel() / D;
  if (x.dim() == 3 && x.stride(2) == 1) return {x, rows, D, std::max<int64_t>(x.size(1), 1), x.stride(0), x.stride(1)};
  return {x, rows, D, std::max<int64_t>(rows, 1), 0, x.stride(0)};  // x: the [rows, D] as_rows made
}

template <typename T>
void layer_norm_rows(const NormRowLayout& x, const at::Tensor& residual, int64_t tokens, int64_t split,
                     RowParams<acc_t<T>> first, RowParams<acc_t<T>> second, double eps, const at::Tensor& sum,
                     const at::Tensor& y) {
  using V = AccVec<T>;
  using A = acc_t<T>;
  constexpr int64_t n = V::size();
  const int64_t rows = x.rows, D = x.D;
  const bool add = residual.defined();
  const T* xp = x.data.const_data_ptr<T>();
  const T* rp = add ? residual.const_data_ptr<T>() : nullptr;
  T* sp = add ? sum.mutable_data_ptr<T>() : nullptr;
  T* yp = y.mutable_data_ptr<T>();
  const int64_t rs = add ? residual.stride(0) : 0;
  const A inv_d = A(1) / static_cast<A>(D);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* xr = xp + x.offset(row);
      V total(0);
      if (add) {
        const T* rr = rp + row * rs;
        T* sr = sp + row * D;
        for (int64_t j = 0; j < D; j += n) {
          const int64_t c = std::min(n, D - j);
          auto v = round_to<T>(load(xr + j, c) + load(rr + j, c));
          store(sr + j, v, c);
          total = total + v;
        }
        xr = sr;
      } else {
        for (int64_t j = 0; j < D; j += n) total = total + load(xr + j, std::min(n, D - j));
      }
      const A mean = reduce_sum<T>(total) * inv_d;
      const V mean_v(mean);
      V squares(0);
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        // The tail lanes load zeros; mask them so they add nothing to the variance.
        auto d = V::set(V(0), load(xr + j, c) - mean_v, c);
        squares = at::vec::fmadd(d, d, squares);
      }
      const V rstd(A(1) / std::sqrt(reduce_sum<T>(squares) * inv_d + static_cast<A>(eps)));
      const auto& p = (row % tokens) < split ? first : second;
      T* yr = yp + row * D;
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        auto normed = (load(xr + j, c) - mean_v) * rstd;
        auto out = p.bias != nullptr ? at::vec::fmadd(normed, V::loadu(p.weight + j, c), V::loadu(p.bias + j, c))
                                     : normed * V::loadu(p.weight + j, c);
        store(yr + j, out, c);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> layer_norm(const at::Tensor& x_in, const at::Tensor& residual_in, int64_t tokens,
                                              int64_t split, const at::Tensor& weight_a,
                                              const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                              const std::optional<at::Tensor>& bias_b, double eps) {
  // Without a residual, a [B, T, D] view with unit channel stride is read in place (a token range of a sequence).
  auto x = !residual_in.defined() && x_in.dim() == 3 && x_in.stride(2) == 1 ? x_in : as_rows(x_in);
  auto residual = residual_in.defined() ? as_rows(residual_in) : at::Tensor();
  auto sum = residual.defined() ? empty_contiguous(x_in) : at::Tensor();
  auto y = empty_contiguous(x_in);
  const NormRowLayout layout = norm_row_layout(x);
  auto sum_rows = sum.defined() ? sum.view({-1, layout.D}) : sum;
  auto y_rows = y.view({-1, layout.D});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::layer_norm", [&] {
    using A = acc_t<scalar_t>;
    const auto type = c10::CppTypeToScalarType<A>::value;
    auto wa = weight_a.to(type).contiguous(), wb = weight_b.to(type).contiguous();
    auto ba = bias_a.has_value() ? bias_a->to(type).contiguous() : at::Tensor();
    auto bb = bias_b.has_value() ? bias_b->to(type).contiguous() : at::Tensor();
    RowParams<A> first{wa.const_data_ptr<A>(), ba.defined() ? ba.const_data_ptr<A>() : nullptr};
    RowParams<A> second{wb.const_data_ptr<A>(), bb.defined() ? bb.const_data_ptr<A>() : nullptr};
    layer_norm_rows<scalar_t>(layout, residual, std::max<int64_t>(tokens, 1), split, first, second, eps, sum_rows,
                              y_rows);
  });
  return {sum, y};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
