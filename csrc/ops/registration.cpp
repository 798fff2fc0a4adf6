// Every vlmzoo op's schema, declared once. Implementations live per dispatch key:
// cpu/register.cpp (CPU), meta.cpp (Meta), autograd_*.cpp (Autograd), cuda_bridge/ (CUDA).
#include <torch/library.h>

#include "ops/cpu/dispatch.h"
#include "ops/linear_formats.h"
#include "ops/reference.h"
#include "ops/training_ops.h"

namespace {
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("vlmzoo::gated_act", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>();
  return op.call(gate, up, "silu");
}

at::Tensor reference_swiglu(const at::Tensor& gate, const at::Tensor& up) {
  return vlmzoo::ops::reference_gated_act(gate, up, "silu");
}

at::Tensor reference_gated_act(const at::Tensor& gate, const at::Tensor& up, c10::string_view act) {
  return vlmzoo::ops::reference_gated_act(gate, up, std::string(act));
}

std::tuple<at::Tensor, at::Tensor> reference_act_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& bias,
                                                          const std::optional<at::Tensor>& up, c10::string_view act) {
  return vlmzoo::ops::reference_act_backward(grad, x, bias, up, std::string(act));
}

std::string cpu_isa() { return vlmzoo::ops::cpu::isa_name(vlmzoo::ops::cpu::active_isa()); }

at::Tensor reference_bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, c10::string_view act) {
  return vlmzoo::ops::reference_bias_act(x, bias, std::string(act));
}
}  // namespace

TORCH_LIBRARY(vlmzoo, m) {
  // Norms. x: [..., D]; weight, bias: [D]. The add_ variants return (x + residual, norm(x + residual));
  // add_rms_norm takes a residual of another floating dtype (sum in the promoted dtype: checks.h).
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("layer_norm(Tensor x, Tensor weight, Tensor? bias, float eps) -> Tensor");
  m.def("add_layer_norm(Tensor x, Tensor residual, Tensor weight, Tensor? bias, float eps) -> (Tensor, Tensor)");
  // Activations: act in gelu, gelu_tanh, quick_gelu, relu, relu2, silu.
  m.def("bias_act(Tensor x, Tensor? bias, str act) -> Tensor");
  m.def("gated_act(Tensor gate, Tensor up, str act) -> Tensor");
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  // rms_norm's gradients at x (add_rms_norm: at the sum) for grad = dL/d(normed): (dx + grad_sum, dweight).
  m.def("rms_norm_backward(Tensor grad, Tensor x, Tensor weight, float eps, Tensor? grad_sum=None) -> (Tensor, Tensor)");
  // Gradients of bias_act / gated_act for grad = dL/d(output): (grad (* up) * act'(x (+ bias)), grad * act(x + ...)),
  // the second only with up (gated_act's dgate, dup; bias_act's dx, and its dbias is dx summed).
  m.def("act_backward(Tensor grad, Tensor x, Tensor? bias, Tensor? up, str act) -> (Tensor, Tensor)");
  // logits: [..., V]; labels: [...] int64 in [0, V) or ignore_index. -> (loss, lse) [...] in float32 (float64 for
  // float64): per-row -log softmax(logits)[label] and log-sum-exp, 0 where ignored (the caller reduces, and
  // passes logits unshifted with shifted labels: no copy of the logits). Differentiable in logits.
  m.def("cross_entropy(Tensor logits, Tensor labels, int ignore_index=-100) -> (Tensor, Tensor)");
  // dlogits = grad[..., None] * (softmax(logits) - one_hot(labels)), 0 on ignored rows; lse from the forward.
  m.def("cross_entropy_backward(Tensor grad, Tensor logits, Tensor labels, Tensor lse, int ignore_index=-100) -> Tensor");
  // q: [B, H, T, d], k: [B, Hk, T, d]; cos/sin: [B or 1, T, r] with r <= d even.
  m.def("rope(Tensor q, Tensor k, Tensor cos, Tensor sin) -> (Tensor, Tensor)");
  // q: [B, H, Tq, d]; k, v: [B, Hkv, Tk, d]; allowed: bool broadcastable to [B, H, Tq, Tk].
  m.def("attention(Tensor q, Tensor k, Tensor v, Tensor? allowed=None, float? scale=None) -> Tensor");
  // attention's gradients (dq, dk, dv) for grad = dL/d(out), given the forward's out and the resolved scale.
  m.def("attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor? allowed, float scale) -> (Tensor, Tensor, Tensor)");
  // x: [B, T, D]; tokens [:split] use the _a weights, tokens [split:] the _b weights.
  m.def("multiway_linear(Tensor x, int split, Tensor weight_a, Tensor? bias_a, Tensor weight_b, Tensor? bias_b) -> Tensor");
  m.def("multiway_layer_norm(Tensor x, int split, Tensor weight_a, Tensor? bias_a, Tensor weight_b, Tensor? bias_b, float eps) -> Tensor");
  // Linear layers on packed weights (ops/linear_formats.h). x: [..., in_features] -> [..., out_features],
  // x's dtype. bf16: weights stored in bfloat16, float32 arithmetic. int8: per-channel int8 weights,
  // per-token uint8 activations, int32 dot products (inference; x gets a straight-through gradient).
  m.def("linear_bf16(Tensor x, Tensor packed_weight, int out_features, Tensor? bias=None) -> Tensor");
  m.def("linear_int8(Tensor x, Tensor packed_weight, Tensor scales, Tensor col_sums, Tensor? bias=None) -> Tensor");
  // Packing, once per weight (plain ATen, every backend). weight: [out_features, in_features].
  m.def("pack_linear_bf16(Tensor weight) -> Tensor", &vlmzoo::ops::pack_linear_bf16);
  m.def("unpack_linear_bf16(Tensor packed_weight, int out_features, int in_features) -> Tensor",
        &vlmzoo::ops::unpack_linear_bf16);
  // -> (packed_weight, scales, col_sums).
  m.def("quantize_linear_int8(Tensor weight) -> (Tensor, Tensor, Tensor)", &vlmzoo::ops::quantize_linear_int8);
  m.def("dequantize_linear_int8(Tensor packed_weight, Tensor scales, int in_features) -> Tensor",
        &vlmzoo::ops::dequantize_linear_int8);

  // The plain-ATen references, differentiable through ATen's own autograd.
  m.def("rms_norm_reference(Tensor x, Tensor weight, float eps) -> Tensor", &vlmzoo::ops::reference_rms_norm);
  m.def("add_rms_norm_reference(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)",
        &vlmzoo::ops::reference_add_rms_norm);
  m.def("layer_norm_reference(Tensor x, Tensor weight, Tensor? bias, float eps) -> Tensor",
        &vlmzoo::ops::reference_layer_norm);
  m.def("add_layer_norm_reference(Tensor x, Tensor residual, Tensor weight, Tensor? bias, float eps) -> (Tensor, Tensor)",
        &vlmzoo::ops::reference_add_layer_norm);
  m.def("bias_act_reference(Tensor x, Tensor? bias, str act) -> Tensor", &reference_bias_act);
  m.def("gated_act_reference(Tensor gate, Tensor up, str act) -> Tensor", &reference_gated_act);
  m.def("swiglu_reference(Tensor gate, Tensor up) -> Tensor", &reference_swiglu);
  m.def("rms_norm_backward_reference(Tensor grad, Tensor x, Tensor weight, float eps, Tensor? grad_sum=None) -> (Tensor, Tensor)",
        &vlmzoo::ops::reference_rms_norm_backward);
  m.def("act_backward_reference(Tensor grad, Tensor x, Tensor? bias, Tensor? up, str act) -> (Tensor, Tensor)",
        &reference_act_backward);
  m.def("cross_entropy_reference(Tensor logits, Tensor labels, int ignore_index=-100) -> (Tensor, Tensor)",
        &vlmzoo::ops::reference_cross_entropy);
  m.def("cross_entropy_backward_reference(Tensor grad, Tensor logits, Tensor labels, Tensor lse, int ignore_index=-100) -> Tensor",
        &vlmzoo::ops::reference_cross_entropy_backward);
  m.def("rope_reference(Tensor q, Tensor k, Tensor cos, Tensor sin) -> (Tensor, Tensor)",
        &vlmzoo::ops::reference_rope);
  m.def("attention_reference(Tensor q, Tensor k, Tensor v, Tensor? allowed=None, float? scale=None) -> Tensor",
        &vlmzoo::ops::reference_attention);
  m.def("attention_backward_reference(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor? allowed, float scale) -> (Tensor, Tensor, Tensor)",
        &vlmzoo::ops::reference_attention_backward);
  m.def("multiway_linear_reference(Tensor x, int split, Tensor weight_a, Tensor? bias_a, Tensor weight_b, Tensor? bias_b) -> Tensor",
        &vlmzoo::ops::reference_multiway_linear);
  m.def("multiway_layer_norm_reference(Tensor x, int split, Tensor weight_a, Tensor? bias_a, Tensor weight_b, Tensor? bias_b, float eps) -> Tensor",
        &vlmzoo::ops::reference_multiway_layer_norm);
  m.def("linear_bf16_reference(Tensor x, Tensor packed_weight, int out_features, Tensor? bias=None) -> Tensor",
        &vlmzoo::ops::reference_linear_bf16);
  m.def("linear_int8_reference(Tensor x, Tensor packed_weight, Tensor scales, Tensor col_sums, Tensor? bias=None) -> Tensor",
        &vlmzoo::ops::reference_linear_int8);

  // The instruction set the CPU ops run at: avx512, avx2, baseline or reference (see ops/cpu/dispatch.h;
  // the environment variable VLMZOO_CPU_ISA forces one).
  m.def("cpu_isa() -> str", &cpu_isa);
}

// swiglu is gated_act with silu, on every backend and through autograd.
TORCH_LIBRARY_IMPL(vlmzoo, CompositeImplicitAutograd, m) { m.impl("swiglu", &swiglu); }
