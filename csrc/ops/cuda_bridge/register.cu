// CUDA implementations of the vlmzoo ops: checks (shared with CPU and Meta), at::Tensor -> pointers
// and strides, then the plain CUDA kernels of ops/cuda. float64 runs the ATen reference.
// Built (by nvcc, hence .cu) only when the installed torch has CUDA: see the CUDA section of CMakeLists.txt.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "ops/checks.h"
#include "ops/cuda/kernels.h"
#include "ops/reference.h"

namespace vlmzoo::ops {
namespace {
namespace k = vlmzoo::cuda;
using OptTensor = std::optional<at::Tensor>;

bool has_kernel(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

k::DType dtype_of(at::ScalarType t) {
  if (t == at::kHalf) return k::DType::f16;
  if (t == at::kBFloat16) return k::DType::bf16;
  return k::DType::f32;
}

void check_launch(int status, const char* op) {
  TORCH_CHECK(status == 0, op, ": CUDA kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)));
}

void* stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

int sm_count(const at::Device& device) {
  int count = 0;
  check_launch(static_cast<int>(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device.index())),
               "cudaDeviceGetAttribute");
  return count;
}

const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

at::Tensor as_float(const OptTensor& t) { return t.has_value() ? t->to(at::kFloat).contiguous() : at::Tensor(); }

// Norms: residual may be undefined; rows with (row % tokens) < split use the _a parameters.
std::tuple<at::Tensor, at::Tensor> norm(bool rms, const at::Tensor& x_in, const at::Tensor& residual_in,
                                        at::ScalarType out_type, int64_t tokens, int64_t split,
                                        const at::Tensor& weight_a, const OptTensor& bias_a, const at::Tensor& weight_b,
                                        const OptTensor& bias_b, double eps) {
  c10::cuda::CUDAGuard guard(x_in.device());
  auto x = as_rows(x_in);
  auto residual = residual_in.defined() ? as_rows(residual_in) : at::Tensor();
  // rms_norm's residual may differ in dtype from x: the sum is then in the promoted dtype (float32).
  auto sum = residual.defined() ? empty_contiguous(x_in, at::promote_types(x_in.scalar_type(), residual.scalar_type()))
                                : at::Tensor();
  auto y = empty_contiguous(x_in, out_type);
  auto wa = weight_a.to(at::kFloat).contiguous(), wb = weight_b.to(at::kFloat).contiguous();
  auto ba = as_float(bias_a), bb = as_float(bias_b);
  k::NormArgs a{};
  a.dtype = dtype_of(x.scalar_type());
  a.out_dtype = dtype_of(out_type);
  a.x = x.const_data_ptr();
  a.x_stride = x.stride(0);
  a.residual = residual.defined() ? residual.const_data_ptr() : nullptr;
  a.residual_stride = residual.defined() ? residual.stride(0) : 0;
  a.residual_dtype = residual.defined() ? dtype_of(residual.scalar_type()) : a.dtype;
  a.sum = sum.defined() ? sum.mutable_data_ptr() : nullptr;
  a.y = y.mutable_data_ptr();
  a.weight_a = wa.const_data_ptr<float>();
  a.weight_b = wb.const_data_ptr<float>();
  a.bias_a = ptr_or_null(ba);
  a.bias_b = ptr_or_null(bb);
  a.rows = x.size(0), a.D = x.size(1), a.tokens = std::max<int64_t>(tokens, 1), a.split = split;
  a.eps = static_cast<float>(eps);
  check_launch(rms ? k::rms_norm(a, stream()) : k::layer_norm(a, stream()), "vlmzoo norm");
  return {sum, y};
}

int64_t tokens_of(const at::Tensor& x) { return x.dim() >= 2 ? x.size(-2) : 1; }

bool rms_fits(const at::Tensor& x, const at::Tensor& weight) {
  auto out = rms_norm_out_type(x, weight);
  return has_kernel(x.scalar_type()) && (out == x.scalar_type() || out == at::kFloat);
}

// Mixed x / residual: both with a kernel, and the sum and output float32 (see check_add_rms_norm).
bool add_rms_fits(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight) {
  if (residual.scalar_type() == x.scalar_type()) return rms_fits(x, weight);
  return has_kernel(x.scalar_type()) && has_kernel(residual.scalar_type()) &&
         rms_norm_out_type(add_rms_norm_sum_type(x, residual), weight) == at::kFloat;
}

at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_norm("vlmzoo::rms_norm", x, weight, std::nullopt);
  if (!rms_fits(x, weight)) return reference_rms_norm(x, weight, eps).contiguous();
  return std::get<1>(norm(true, x, {}, rms_norm_out_type(x, weight), 1, 1, weight, {}, weight, {}, eps));
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& x, const at::Tensor& residual,
                                                     const at::Tensor& weight, double eps) {
  check_add_rms_norm(x, residual, weight);
  if (!add_rms_fits(x, residual, weight)) {
    auto [s, y] = reference_add_rms_norm(x, residual, weight, eps);
    return {s.contiguous(), y.contiguous()};
  }
  return norm(true, x, residual, rms_norm_out_type(add_rms_norm_sum_type(x, residual), weight), 1, 1, weight, {},
              weight, {}, eps);
}

at::Tensor layer_norm_cuda(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias, double eps) {
  check_norm("vlmzoo::layer_norm", x, weight, bias);
  if (!has_kernel(x.scalar_type())) return reference_layer_norm(x, weight, bias, eps).contiguous();
  const auto t = tokens_of(x);
  return std::get<1>(norm(false, x, {}, x.scalar_type(), t, t, weight, bias, weight, bias, eps));
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_cuda(const at::Tensor& x, const at::Tensor& residual,
                                                       const at::Tensor& weight, const OptTensor& bias, double eps) {
  check_norm("vlmzoo::add_layer_norm", x, weight, bias, &residual);
  if (!has_kernel(x.scalar_type())) {
    auto [s, y] = reference_add_layer_norm(x, residual, weight, bias, eps);
    return {s.contiguous(), y.contiguous()};
  }
  const auto t = tokens_of(x);
  return norm(false, x, residual, x.scalar_type(), t, t, weight, bias, weight, bias, eps);
}

at::Tensor multiway_layer_norm_cuda(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                    const OptTensor& bias_a, const at::Tensor& weight_b, const OptTensor& bias_b,
                                    double eps) {
  check_multiway("vlmzoo::multiway_layer_norm", x, split, weight_a, bias_a, weight_b, bias_b, /*linear=*/false);
  if (!has_kernel(x.scalar_type()))
    return reference_multiway_layer_norm(x, split, weight_a, bias_a, weight_b, bias_b, eps).contiguous();
  return std::get<1>(norm(false, x, {}, x.scalar_type(), x.size(1), split, weight_a, bias_a, weight_b, bias_b, eps));
}

at::Tensor activation(const at::Tensor& a_in, const at::Tensor& b_in, const OptTensor& bias, Act act) {
  c10::cuda::CUDAGuard guard(a_in.device());
  auto a = as_rows(a_in);
  auto b = b_in.defined() ? as_rows(b_in) : at::Tensor();
  auto bias_f = as_float(bias);
  auto out = empty_contiguous(a_in);
  k::ActArgs args{};
  args.dtype = dtype_of(a.scalar_type());
  args.a = a.const_data_ptr();
  args.a_stride = a.stride(0);
  args.b = b.defined() ? b.const_data_ptr() : nullptr;
  args.b_stride = b.defined() ? b.stride(0) : 0;
  args.bias = ptr_or_null(bias_f);
  args.out = out.mutable_data_ptr();
  args.rows = a.size(0), args.D = a.size(1);
  args.act = static_cast<k::Act>(static_cast<int>(act));
  check_launch(k::activation(args, stream()), "vlmzoo activation");
  return out;
}

at::Tensor bias_act_cuda(const at::Tensor& x, const OptTensor& bias, c10::string_view act) {
  const Act kind = parse_act(act);
  check_bias_act(x, bias);
  if (!has_kernel(x.scalar_type())) return reference_bias_act(x, bias, std::string(act)).contiguous();
  return activation(x, {}, bias, kind);
}

at::Tensor gated_act_cuda(const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
  const Act kind = parse_act(act);
  check_gated_act(gate, up);
  if (!has_kernel(gate.scalar_type())) return reference_gated_act(gate, up, std::string(act)).contiguous();
  return activation(gate, up, std::nullopt, kind);
}

std::tuple<at::Tensor, at::Tensor> rope_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& cos,
                                             const at::Tensor& sin) {
  check_rope(q_in, k_in, cos, sin);
  if (!has_kernel(q_in.scalar_type())) {
    auto [q, kk] = reference_rope(q_in, k_in, cos, sin);
    return {q.contiguous(), kk.contiguous()};
  }
  c10::cuda::CUDAGuard guard(q_in.device());
  auto q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  auto kk = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  // As on CPU: cos/sin rounded to q's dtype, then held in float.
  auto c = cos.to(q.scalar_type()).to(at::kFloat).contiguous(), s = sin.to(q.scalar_type()).to(at::kFloat).contiguous();
  auto q_out = empty_contiguous(q), k_out = empty_contiguous(kk);
  k::RopeArgs a{};
  a.dtype = dtype_of(q.scalar_type());
  a.q = q.const_data_ptr();
  a.k = kk.const_data_ptr();
  for (int i = 0; i < 3; ++i) a.q_strides[i] = q.stride(i), a.k_strides[i] = kk.stride(i);
  a.q_out = q_out.mutable_data_ptr();
  a.k_out = k_out.mutable_data_ptr();
  a.cos = c.const_data_ptr<float>();
  a.sin = s.const_data_ptr<float>();
  a.cos_batch_stride = c.size(0) == 1 ? 0 : c.stride(0);
  a.B = q.size(0), a.Hq = q.size(1), a.Hk = kk.size(1), a.T = q.size(2), a.d = q.size(3), a.r = c.size(2);
  check_launch(k::rope(a, stream()), "vlmzoo::rope");
  return {q_out, k_out};
}

at::Tensor attention_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                          const OptTensor& allowed, std::optional<double> scale) {
  check_attention(q_in, k_in, v_in, allowed);
  if (!has_kernel(q_in.scalar_type()) || q_in.size(3) > k::kAttentionMaxHeadDim)
    return reference_attention(q_in, k_in, v_in, allowed, scale).contiguous();
  c10::cuda::CUDAGuard guard(q_in.device());
  auto unit_last = [](const at::Tensor& t) { return t.stride(3) == 1 ? t : t.contiguous(); };
  auto q = unit_last(q_in), kk = unit_last(k_in), v = unit_last(v_in);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), d = q.size(3), Tk = kk.size(2);
  auto out = at::empty({B, H, Tq, d}, q.options());
  if (out.numel() == 0) return out;
  if (Tk == 0) return out.zero_();
  k::AttentionArgs a{};
  a.dtype = dtype_of(q.scalar_type());
  a.q = q.const_data_ptr();
  a.k = kk.const_data_ptr();
  a.v = v.const_data_ptr();
  for (int i = 0; i < 3; ++i) a.q_strides[i] = q.stride(i), a.k_strides[i] = kk.stride(i), a.v_strides[i] = v.stride(i);
  at::Tensor mask;
  if (allowed.has_value()) {
    mask = allowed->expand({B, H, Tq, Tk});
    a.mask = mask.const_data_ptr<bool>();
    for (int i = 0; i < 4; ++i) a.mask_strides[i] = mask.stride(i);
  }
  a.out = out.mutable_data_ptr();
  a.B = B, a.H = H, a.Hkv = kk.size(1), a.Tq = Tq, a.Tk = Tk, a.d = d;
  a.scale = static_cast<float>(attention_scale(q, scale));
  a.splits = k::attention_splits(B, H, Tq, Tk, sm_count(q.device()));
  at::Tensor workspace;
  if (a.splits > 1) {
    workspace = at::empty({k::attention_workspace_floats(B, H, Tq, d, a.splits)}, q.options().dtype(at::kFloat));
    a.workspace = workspace.mutable_data_ptr<float>();
  }
  check_launch(k::attention(a, stream()), "vlmzoo::attention");
  return out;
}
}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CUDA, m) {
  m.impl("rms_norm", &rms_norm_cuda);
  m.impl("add_rms_norm", &add_rms_norm_cuda);
  m.impl("layer_norm", &layer_norm_cuda);
  m.impl("add_layer_norm", &add_layer_norm_cuda);
  m.impl("multiway_layer_norm", &multiway_layer_norm_cuda);
  m.impl("bias_act", &bias_act_cuda);
  m.impl("gated_act", &gated_act_cuda);
  m.impl("rope", &rope_cuda);
  m.impl("attention", &attention_cuda);
}

}  // namespace vlmzoo::ops
