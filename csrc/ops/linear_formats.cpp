#include "ops/linear_formats.h"

#include <ATen/native/CPUBlas.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace vlmzoo::ops {

namespace {
std::atomic<bool>& bf16_amx_switch() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("VLMZOO_BF16_AMX");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }()};
  return on;
}
}  // namespace

void set_bf16_amx(bool enabled) { bf16_amx_switch().store(enabled); }

bool bf16_amx() {
  // could_pack(bf16) is oneDNN's "this CPU has AMX-BF16" for torch's brgemm.
  static const bool available = at::native::cpublas::could_pack(at::kBFloat16);
  return available && bf16_amx_switch().load();
}

at::Tensor pack_panels(const at::Tensor& w, int64_t cols, int64_t group) {
  const int64_t n = w.size(0), k = w.size(1);
  const int64_t panels = ceil_div(n, cols), groups = ceil_div(k, group);
  auto padded = at::constant_pad_nd(w, {0, groups * group - k, 0, panels * cols - n});
  return padded.view({panels, cols, groups, group}).permute({0, 2, 1, 3}).contiguous();
}

at::Tensor unpack_panels(const at::Tensor& packed, int64_t out_features, int64_t in_features) {
  const int64_t panels = packed.size(0), groups = packed.size(1), cols = packed.size(2), group = packed.size(3);
  return packed.permute({0, 2, 1, 3})
      .reshape({panels * cols, groups * group})
      .narrow(0, 0, out_features)
      .narrow(1, 0, in_features);
}

namespace {
void check_weight(const char* op, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be [out_features, in_features], got ", weight.sizes());
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), op, ": weight must be floating point, got ",
              weight.scalar_type());
}
}  // namespace

at::Tensor pack_linear_bf16(const at::Tensor& weight) {
  check_weight("vlmzoo::pack_linear_bf16", weight);
  return pack_panels(weight.to(at::kBFloat16), kBf16PanelCols, kBf16Group);
}

at::Tensor unpack_linear_bf16(const at::Tensor& packed, int64_t out_features, int64_t in_features) {
  TORCH_CHECK(packed.dim() == 4 && packed.size(0) == ceil_div(out_features, kBf16PanelCols) &&
                  packed.size(1) == ceil_div(in_features, kBf16Group) && packed.size(2) == kBf16PanelCols &&
                  packed.size(3) == kBf16Group,
              "vlmzoo::unpack_linear_bf16: packed weight ", packed.sizes(), " is not the packing of a [",
              out_features, ", ", in_features, "] weight");
  return unpack_panels(packed, out_features, in_features);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_linear_int8(const at::Tensor& weight) {
  check_weight("vlmzoo::quantize_linear_int8", weight);
  TORCH_CHECK(weight.size(1) <= kInt8MaxInFeatures, "vlmzoo::quantize_linear_int8: in_features ", weight.size(1),
              " exceeds ", kInt8MaxInFeatures, " (int32 accumulation)");
  auto w = weight.detach().to(at::kFloat);
  auto amax = w.abs().amax(1);
  auto scales = at::where(amax > 0, amax / 127, at::ones_like(amax));
  auto q = at::clamp(at::round(w / scales.unsqueeze(1)), -127, 127).to(at::kChar);
  auto col_sums = q.sum(1, /*keepdim=*/false, at::kInt);
  return {pack_panels(q, kInt8PanelCols, kInt8Group), scales, col_sums};
}

at::Tensor dequantize_linear_int8(const at::Tensor& packed, const at::Tensor& scales, int64_t in_features) {
  const int64_t n = scales.size(0);
  TORCH_CHECK(packed.dim() == 4 && packed.size(0) == ceil_div(n, kInt8PanelCols) &&
                  packed.size(1) == ceil_div(in_features, kInt8Group) && packed.size(2) == kInt8PanelCols &&
                  packed.size(3) == kInt8Group,
              "vlmzoo::dequantize_linear_int8: packed weight ", packed.sizes(), " is not the packing of a [", n,
              ", ", in_features, "] weight");
  return unpack_panels(packed, n, in_features).to(at::kFloat) * scales.to(at::kFloat).unsqueeze(1);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_rows_uint8(const at::Tensor& x) {
  auto hi = at::clamp_min(x.amax(1), 0), lo = at::clamp_max(x.amin(1), 0);
  // Tensor / tensor and reciprocal are IEEE divisions, as the kernel's scalar ones (a division by a
  // Python-style scalar may become a multiplication by its reciprocal).
  auto scale = (hi - lo) / at::full_like(hi, 255.0);
  scale = at::where(scale > 0, scale, at::ones_like(scale));
  auto inv = at::reciprocal(scale);
  auto zero_point = at::round(-lo * inv);
  auto q = at::clamp(at::round(x * inv.unsqueeze(1)) + zero_point.unsqueeze(1), 0, 255);
  return {q, scale, zero_point};
}

namespace {
void check_x_and_bias(const char* op, const at::Tensor& x, const c10::SymInt& out_features,
                      const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension ([..., in_features])");
  if (bias.has_value()) {
    TORCH_CHECK(at::isFloatingType(bias->scalar_type()), op, ": bias must be floating point, got ",
                bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == out_features, op, ": bias must have shape [",
                out_features, "] (out_features), got ", bias->sym_sizes());
  }
}

void check_panels(const char* op, const char* packer, const at::Tensor& packed, at::ScalarType dtype,
                  const c10::SymInt& out_features, const c10::SymInt& in_features, int64_t cols, int64_t group) {
  TORCH_CHECK(packed.scalar_type() == dtype, op, ": packed_weight must be ", dtype, " (from ", packer, "), got ",
              packed.scalar_type());
  const c10::SymInt panels = (out_features + cols - 1) / cols, groups = (in_features + group - 1) / group;
  TORCH_CHECK(packed.dim() == 4 && packed.sym_size(0) == panels && packed.sym_size(1) == groups &&
                  packed.sym_size(2) == cols && packed.sym_size(3) == group,
              op, ": packed_weight must be [", panels, ", ", groups, ", ", cols, ", ", group, "] (", packer,
              " of an [out_features = ", out_features, ", in_features = ", in_features,
              "] weight, in_features being x's last dimension), got ", packed.sym_sizes());
  TORCH_CHECK(packed.is_contiguous(), op, ": packed_weight must be contiguous (as ", packer, " returns it)");
}
}  // namespace

void check_linear_bf16(const at::Tensor& x, const at::Tensor& packed, int64_t out_features,
                       const std::optional<at::Tensor>& bias) {
  const char* op = "vlmzoo::linear_bf16";
  TORCH_CHECK(out_features >= 1, op, ": out_features must be positive, got ", out_features);
  check_x_and_bias(op, x, out_features, bias);
  check_panels(op, "vlmzoo::pack_linear_bf16", packed, at::kBFloat16, out_features, x.sym_size(-1), kBf16PanelCols,
               kBf16Group);
}

void check_linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const at::Tensor& col_sums, const std::optional<at::Tensor>& bias) {
  const char* op = "vlmzoo::linear_int8";
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == at::kFloat, op,
              ": scales must be float32 [out_features] (from vlmzoo::quantize_linear_int8), got ",
              scales.scalar_type(), " ", scales.sym_sizes());
  const auto& out_features = scales.sym_size(0);
  TORCH_CHECK(col_sums.scalar_type() == at::kInt && col_sums.dim() == 1 && col_sums.sym_size(0) == out_features, op,
              ": col_sums must be int32 [", out_features, "] (from vlmzoo::quantize_linear_int8), got ",
              col_sums.scalar_type(), " ", col_sums.sym_sizes());
  check_x_and_bias(op, x, out_features, bias);
  TORCH_CHECK(x.sym_size(-1) <= kInt8MaxInFeatures, op, ": in_features ", x.sym_size(-1), " exceeds ",
              kInt8MaxInFeatures, " (int32 accumulation)");
  check_panels(op, "vlmzoo::quantize_linear_int8", packed, at::kChar, out_features, x.sym_size(-1), kInt8PanelCols,
               kInt8Group);
}

c10::SymDimVector linear_out_shape(const at::Tensor& x, const c10::SymInt& out_features) {
  c10::SymDimVector shape(x.sym_sizes().begin(), x.sym_sizes().end());
  shape.back() = out_features;
  return shape;
}

}  // namespace vlmzoo::ops
