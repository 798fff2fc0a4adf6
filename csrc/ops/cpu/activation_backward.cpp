// act_backward on CPU: the gradients of bias_act / gated_act in one pass over the rows, act(a) and
// act'(a) computed together in acc_t (the ATen composite it replaces made about ten passes).
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include <cmath>

#include "ops/cpu/training_kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

template <typename V>
inline V sigmoid(const V& x) {
  using A = typename V::value_type;
  return V(A(1)) / (V(A(1)) + x.neg().exp());
}

// (act(x), act'(x)).
template <Act act, typename V>
inline std::pair<V, V> value_and_slope(const V& x) {
  using A = typename V::value_type;
  const V one(A(1));
  if constexpr (act == Act::gelu) {
    const V cdf = V(A(0.5)) * (one + (x * V(A(M_SQRT1_2))).erf());
    const V pdf = (x * x * V(A(-0.5))).exp() * V(A(0.5 * M_2_SQRTPI * M_SQRT1_2));
    return {x * cdf, at::vec::fmadd(x, pdf, cdf)};
  } else if constexpr (act == Act::gelu_tanh) {
    // 0.5 * (1 + tanh(u)) = sigmoid(2u) = s, and 0.5 * (1 - tanh(u)^2) = 2 s (1 - s).
    const A k = A(M_2_SQRTPI * M_SQRT1_2), c = A(0.044715);
    const V x2 = x * x;
    const V s = sigmoid(V(A(2) * k) * at::vec::fmadd(V(c) * x2, x, x));
    const V du = V(k) * at::vec::fmadd(V(A(3) * c), x2, one);
    return {x * s, at::vec::fmadd(V(A(2)) * x * s * (one - s), du, s)};
  } else if constexpr (act == Act::quick_gelu) {
    const V s = sigmoid(x * V(A(1.702)));
    return {x * s, at::vec::fmadd(V(A(1.702)) * x * s, one - s, s)};
  } else if constexpr (act == Act::relu) {
    const V zero(A(0));
    return {at::vec::clamp_min(x, zero), V::blendv(zero, one, x > zero)};
  } else if constexpr (act == Act::relu2) {
    const V r = at::vec::clamp_min(x, V(A(0)));
    return {r * r, V(A(2)) * r};
  } else {
    const V s = sigmoid(x);
    return {x * s, s * at::vec::fmadd(x, one - s, one)};
  }
}

// a = x (+ bias); da = grad (* up) * act'(a), dup = grad * act(a).
template <typename T, Act act>
void backward_rows(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias, const at::Tensor& up,
                   const at::Tensor& da, const at::Tensor& dup) {
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t rows = x.size(0), D = x.size(1);
  const T* gp = grad.const_data_ptr<T>();
  const T* xp = x.const_data_ptr<T>();
  const T* up_p = up.defined() ? up.const_data_ptr<T>() : nullptr;
  const acc_t<T>* biasp = bias.defined() ? bias.const_data_ptr<acc_t<T>>() : nullptr;
  T* dap = da.mutable_data_ptr<T>();
  T* dupp = dup.defined() ? dup.mutable_data_ptr<T>() : nullptr;
  const int64_t gs = grad.stride(0), xs = x.stride(0), us = up.defined() ? up.stride(0) : 0;
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        V a = load(xp + row * xs + j, c);
        if (biasp != nullptr) a = a + V::loadu(biasp + j, c);
        const V g = load(gp + row * gs + j, c);
        auto [value, slope] = value_and_slope<act>(a);
        if (up_p != nullptr) {
          store(dap + row * D + j, g * load(up_p + row * us + j, c) * slope, c);
          store(dupp + row * D + j, g * value, c);
        } else {
          store(dap + row * D + j, g * slope, c);
        }
      }
    }
  });
}

template <typename T>
void backward_rows(Act act, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& bias, const at::Tensor& up,
                   const at::Tensor& da, const at::Tensor& dup) {
  switch (act) {
    case Act::gelu: return backward_rows<T, Act::gelu>(grad, x, bias, up, da, dup);
    case Act::gelu_tanh: return backward_rows<T, Act::gelu_tanh>(grad, x, bias, up, da, dup);
    case Act::quick_gelu: return backward_rows<T, Act::quick_gelu>(grad, x, bias, up, da, dup);
    case Act::relu: return backward_rows<T, Act::relu>(grad, x, bias, up, da, dup);
    case Act::relu2: return backward_rows<T, Act::relu2>(grad, x, bias, up, da, dup);
    case Act::silu: return backward_rows<T, Act::silu>(grad, x, bias, up, da, dup);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> act_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                const std::optional<at::Tensor>& bias_in,
                                                const std::optional<at::Tensor>& up_in, Act act) {
  auto grad = as_rows(grad_in), x = as_rows(x_in);
  auto up = up_in.has_value() ? as_rows(*up_in) : at::Tensor();
  auto da = empty_contiguous(x_in);
  auto dup = up_in.has_value() ? empty_contiguous(x_in) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::act_backward", [&] {
    auto bias = bias_in.has_value() ? bias_in->to(c10::CppTypeToScalarType<acc_t<scalar_t>>::value).contiguous()
                                    : at::Tensor();
    const int64_t D = x.size(1);
    backward_rows<scalar_t>(act, grad, x, bias, up, da.view({-1, D}),
                            dup.defined() ? dup.view({-1, D}) : at::Tensor());
  });
  return {da, dup};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
