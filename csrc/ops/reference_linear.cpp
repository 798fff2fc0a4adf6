// References of the packed-weight linear ops (ops/linear_formats.h): plain ATen, the definitions the
// CPU kernels are tested against.
#include "ops/linear_formats.h"
#include "ops/reference.h"

namespace vlmzoo::ops {

at::Tensor reference_linear_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                                 const std::optional<at::Tensor>& bias) {
  const auto type = at::promote_types(x.scalar_type(), at::kFloat);
  auto weight = unpack_linear_bf16(packed, out_features, x.size(-1)).to(type);
  auto out = at::linear(x.to(type), weight, bias.has_value() ? std::optional<at::Tensor>(bias->to(type)) : bias);
  return out.to(x.scalar_type());
}

at::Tensor reference_linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                 const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  const int64_t n = scales.size(0), k = x.size(-1);
  auto rows = x.reshape({-1, k}).to(at::kFloat);
  auto [q, x_scale, zero_point] = quantize_rows_uint8(rows);
  auto q_weight = unpack_panels(packed, n, k).to(at::kDouble);
  // Integers below 2^53: exact in float64, as the kernel's int32 sums.
  auto dots = at::mm((q - zero_point.unsqueeze(1)).to(at::kDouble), q_weight.t());
  auto out = dots.to(at::kFloat) * (x_scale.unsqueeze(1) * scales.unsqueeze(0));
  if (bias.has_value()) out = out + bias->to(at::kFloat);
  auto shape = x.sizes().vec();
  shape.back() = n;
  return out.reshape(shape).to(x.scalar_type());
}

}  // namespace vlmzoo::ops
