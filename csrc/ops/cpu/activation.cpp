// bias_act (act(x + bias)) and gated_act (act(gate) * up) on CPU, computed in acc_t and rounded once.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include <cmath>

#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// x / (1 + exp(-k x)): float uses exp_u20 and a refined reciprocal instead of a division (rcp14 on
// AVX-512: ~1 ulp; the 12-bit rcp of AVX2: a few ulp).
template <typename V>
inline V x_sigmoid(const V& x, const V& minus_k_x) {
  using A = typename V::value_type;
#if defined(VLMZOO_VEC_AVX512)
  if constexpr (std::is_same_v<A, float>) {
    const __m512 denom = __m512(V(1.f) + minus_k_x.exp_u20());
    __m512 r = _mm512_rcp14_ps(denom);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(denom, r, _mm512_set1_ps(2.f)));  // one Newton step
    return x * V(r);
  }
#elif defined(VLMZOO_VEC_AVX2)
  if constexpr (std::is_same_v<A, float>) {
    const __m256 denom = __m256(V(1.f) + minus_k_x.exp_u20());
    __m256 r = _mm256_rcp_ps(denom);
    r = _mm256_mul_ps(r, _mm256_fnmadd_ps(denom, r, _mm256_set1_ps(2.f)));  // one Newton step
    return x * V(r);
  }
#endif
  return x / (V(A(1)) + minus_k_x.exp());
}

template <Act act, typename V>
inline V apply(const V& x) {
  using A = typename V::value_type;
  if constexpr (act == Act::gelu) {
    return x * V(A(0.5)) * (V(A(1)) + (x * V(A(M_SQRT1_2))).erf());
  } else if constexpr (act == Act::gelu_tanh) {
    // 0.5 * (1 + tanh(u)) == sigmoid(2u): one exp instead of a tanh.
    const V minus_2u = V(A(-2 * M_2_SQRTPI * M_SQRT1_2)) * at::vec::fmadd(V(A(0.044715)) * x * x, x, x);
    return x_sigmoid(x, minus_2u);
  } else if constexpr (act == Act::quick_gelu) {
    return x_sigmoid(x, x * V(A(-1.702)));
  } else if constexpr (act == Act::relu) {
    return at::vec::clamp_min(x, V(A(0)));
  } else if constexpr (act == Act::relu2) {
    const V r = at::vec::clamp_min(x, V(A(0)));
    return r * r;
  } else {
    return x_sigmoid(x, x.neg());
  }
}

// out[row] = act(a[row] (+ bias)) (* b[row]); a, b: [rows, D] with unit stride along D.
template <typename T, Act act>
void act_rows(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, const at::Tensor& out) {
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t rows = a.size(0), D = a.size(1);
  const T* ap = a.const_data_ptr<T>();
  const T* bp = b.defined() ? b.const_data_ptr<T>() : nullptr;
  const acc_t<T>* biasp = bias.defined() ? bias.const_data_ptr<acc_t<T>>() : nullptr;
  T* op = out.mutable_data_ptr<T>();
  const int64_t as = a.stride(0), bs = b.defined() ? b.stride(0) : 0;
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* ar = ap + row * as;
      T* outr = op + row * D;
      for (int64_t j = 0; j < D; j += n) {
        const int64_t c = std::min(n, D - j);
        V v = load(ar + j, c);
        if (biasp != nullptr) v = v + V::loadu(biasp + j, c);
        v = apply<act>(v);
        if (bp != nullptr) v = v * load(bp + row * bs + j, c);
        store(outr + j, v, c);
      }
    }
  });
}

template <typename T>
void act_rows(Act act, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, const at::Tensor& out) {
  switch (act) {
    case Act::gelu: return act_rows<T, Act::gelu>(a, b, bias, out);
    case Act::gelu_tanh: return act_rows<T, Act::gelu_tanh>(a, b, bias, out);
    case Act::quick_gelu: return act_rows<T, Act::quick_gelu>(a, b, bias, out);
    case Act::relu: return act_rows<T, Act::relu>(a, b, bias, out);
    case Act::relu2: return act_rows<T, Act::relu2>(a, b, bias, out);
    case Act::silu: return act_rows<T, Act::silu>(a, b, bias, out);
  }
}

}  // namespace

at::Tensor bias_act(const at::Tensor& x_in, const std::optional<at::Tensor>& bias_in, Act act) {
  auto x = as_rows(x_in);
  auto out = empty_contiguous(x_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vlmzoo::bias_act", [&] {
    auto bias = bias_in.has_value() ? bias_in->to(c10::CppTypeToScalarType<acc_t<scalar_t>>::value).contiguous()
                                    : at::Tensor();
    act_rows<scalar_t>(act, x, at::Tensor(), bias, out.view({-1, x.size(1)}));
  });
  return out;
}

at::Tensor gated_act(const at::Tensor& gate_in, const at::Tensor& up_in, Act act) {
  auto gate = as_rows(gate_in), up = as_rows(up_in);
  auto out = empty_contiguous(gate_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "vlmzoo::gated_act", [&] {
    act_rows<scalar_t>(act, gate, up, at::Tensor(), out.view({-1, gate.size(1)}));
  });
  return out;
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
