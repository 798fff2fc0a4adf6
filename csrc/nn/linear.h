#pragma once
// Parameter-holding primitives that allocate without initialising: a model that is about to load a
// checkpoint (or is built on the meta device to be counted) never pays for random draws. Weights
// are drawn later, once, by models::initialize_weights when a model is trained from scratch.
#include <torch/torch.h>

#include <functional>
#include <string>

namespace vlmzoo::nn {

// How an nn::Linear stores its weight (set once, after the float weights are loaded or drawn):
//   kFloat  `weight` [out, in] in the model's dtype, torch::linear (MKL): trainable.
//   kBf16   `weight_bf16`: bfloat16 panels (ops/linear_formats.h), float32 arithmetic (vlmzoo::linear_bf16):
//           half the bytes of float32 per decode step. Inference only.
//   kInt8   `weight_int8` int8 panels, `weight_scales` [out] float32 (per output channel),
//           `weight_col_sums` [out] int32; activations quantised per token at run time, int32
//           accumulation, float32 epilogue (vlmzoo::linear_int8). Inference only.
// The packed tensors replace `weight` among the module's parameters (requires_grad false), so a state
// dict names them; `bias` stays a float parameter in every format.
enum class WeightFormat { kFloat, kBf16, kInt8 };
// "float" | "bf16" | "int8"; anything else raises naming the choices.
WeightFormat weight_format_named(const std::string& name);
std::string weight_format_name(WeightFormat format);

// y = x W^T + b. weight: [out, in]; bias: [out] or undefined.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  // The same with another bias ([out] or undefined) in place of the module's own (EVA's q/0/v bias).
  torch::Tensor forward_with_bias(const torch::Tensor& x, const torch::Tensor& bias);
  // The block's own computation, whatever override_forward says (what a Python view of it runs).
  torch::Tensor forward_own(const torch::Tensor& x) { return forward_with_bias(x, bias); }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  WeightFormat weight_format() const { return format_; }
  // Packs `weight` into `format` and drops it; only from kFloat (a packed weight is not packed again).
  void set_weight_format(WeightFormat format);
  // Replaces `weight` (float format only) by `w` [rows, in]: resize_token_embeddings grows an LM head.
  void set_weight(const torch::Tensor& w);
  // Refuses training mode once the weights are packed (they get no gradient).
  void train(bool on = true) override;

  torch::Tensor weight, bias;
  // Set while the block is hooked or replaced from Python (vlmzoo/models/blocks.py): forward runs it
  // in place of the weights. Unset, forward pays one test.
  std::function<torch::Tensor(const torch::Tensor&)> override_forward;
  torch::Tensor weight_bf16;                                  // kBf16
  torch::Tensor weight_int8, weight_scales, weight_col_sums;  // kInt8

 private:
  int64_t in_, out_;
  WeightFormat format_ = WeightFormat::kFloat;
};
TORCH_MODULE(Linear);

// weight: [count, dim]; forward: ids [...] -> [..., dim].
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t count, int64_t dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);
  // Replaces `weight` by `w` [count, dim] (resize_token_embeddings): the parameter named "weight" is `w` itself.
  void set_weight(const torch::Tensor& w);

  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// Non-overlapping patches: a convolution with kernel = stride = patch. weight: [out, channels, p, p].
class PatchConvImpl : public torch::nn::Module {
 public:
  PatchConvImpl(int64_t channels, int64_t out, int64_t patch, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& pixels);  // [N, C, H, W] -> [N, out, H/p, W/p]

  torch::Tensor weight, bias;

 private:
  int64_t patch_;
};
TORCH_MODULE(PatchConv);

// Every nn::Linear under root (root included) to `format`; returns how many. All of them must still be
// kFloat: a model is quantised once, from its float weights. On error nothing has been changed.
int64_t set_weight_format(torch::nn::Module& root, WeightFormat format);
// The format of the nn::Linears under root ("float" when there are none).
WeightFormat weight_format_of(const torch::nn::Module& root);

}  // namespace vlmzoo::nn
