// rope on CPU: q and k rotated in one parallel pass over their (batch, head, token) rows.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

// One row: out[:h] = x[:h] c[:h] - x[h:r] s[:h]; out[h:r] = x[h:r] c[h:r] + x[:h] s[h:r]; out[r:] = x[r:].
template <typename T>
inline void rope_row(const T* x, const acc_t<T>* c, const acc_t<T>* s, T* out, int64_t r, int64_t d) {
  using V = AccVec<T>;
  constexpr int64_t n = V::size();
  const int64_t h = r / 2;
  for (int64_t j = 0; j < h; j += n) {
    const int64_t cnt = std::min(n, h - j);
    const V lo = load(x + j, cnt), hi = load(x + h + j, cnt);
    store(out + j, lo * V::loadu(c + j, cnt) - hi * V::loadu(s + j, cnt), cnt);
    store(out + h + j, at::vec::fmadd(lo, V::loadu(s + h + j, cnt), hi * V::loadu(c + h + j, cnt)), cnt);
  }
  for (int64_t j = r; j < d; ++j) out[j] = x[j];
}

template <typename T>
void rope_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                 const at::Tensor& q_out, const at::Tensor& k_out) {
  using A = acc_t<T>;
  const int64_t B = q.size(0), T_ = q.size(2), d = q.size(3), r = cos.size(2);
  const int64_t Hq = q.size(1), Hk = k.size(1);
  const int64_t q_rows = B * Hq * T_, all_rows = q_rows + B * Hk * T_;
  const A* cp = cos.const_data_ptr<A>();
  const A* sp = sin.const_data_ptr<A>();
  const int64_t cs_b = cos.size(0) == 1 ? 0 : cos.stride(0);
  const T* xp[2] = {q.const_data_ptr<T>(), k.const_data_ptr<T>()};
  T* op[2] = {q_out.mutable_data_ptr<T>(), k_out.mutable_data_ptr<T>()};
  const int64_t heads[2] = {Hq, Hk};
  const int64_t strides[2][3] = {{q.stride(0), q.stride(1), q.stride(2)}, {k.stride(0), k.stride(1), k.stride(2)}};
  at::parallel_for(0, all_rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int which = row < q_rows ? 0 : 1;
      const int64_t local = which == 0 ? row : row - q_rows, H = heads[which];
      const int64_t t = local % T_, h = (local / T_) % H, b = local / (T_ * H);
      const T* xr = xp[which] + b * strides[which][0] + h * strides[which][1] + t * strides[which][2];
      const int64_t offset = b * cs_b + t * r;
      rope_row(xr, cp + offset, sp + offset, op[which] + local * d, r, d);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rope(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& cos,
                                        const at::Tensor& sin) {
  auto q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  auto k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  auto q_out = empty_contiguous(q), k_out = empty_contiguous(k);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "vlmzoo::rope", [&] {
    // cos/sin rounded to q's dtype (as the reference does), then held in acc_t: [B or 1, T, r] contiguous.
    const auto type = c10::CppTypeToScalarType<acc_t<scalar_t>>::value;
    auto c = cos.to(q.scalar_type()).to(type).contiguous(), s = sin.to(q.scalar_type()).to(type).contiguous();
    rope_kernel<scalar_t>(q, k, c, s, q_out, k_out);
  });
  return {q_out, k_out};
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
