#pragma once
// The numerical primitives every block is made of. Each takes `fused`: true routes to the fused
// torch ops (csrc/ops, torch.ops.vlmzoo.*), false to the plain ATen reference, so a whole model can
// be checked against its unfused self.
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace vlmzoo::nn {

// An undefined tensor (a block without bias) as the std::nullopt the ops take.
inline std::optional<torch::Tensor> optional(const torch::Tensor& t) {
  return t.defined() ? std::optional<torch::Tensor>(t) : std::nullopt;
}

// Shared by all blocks of one model, so a model switches kernels in one place.
struct KernelPolicy {
  bool fused = true;
};
using KernelPolicyPtr = std::shared_ptr<KernelPolicy>;

// x: [..., D]; weight: [D]. Computes in float32, casts back, then scales (Llama convention).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool fused);
// Returns (x + residual, rms_norm(x + residual)).
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                                     const torch::Tensor& weight, double eps, bool fused);
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                         double eps, bool fused);

// Activation by name: gelu, gelu_tanh, quick_gelu, relu, relu2, silu.
torch::Tensor activation(const torch::Tensor& x, const std::string& name, bool fused);
// act(gate) * up, with act silu for SwiGLU.
torch::Tensor gated_activation(const torch::Tensor& gate, const torch::Tensor& up, const std::string& name,
                               bool fused);

// q: [B, H, T, d], k: [B, Hk, T, d]; cos/sin: [B, T, rotary_dim]. Rotates the first rotary_dim
// channels with rotate_half (the Hugging Face convention), leaves the rest as they are.
std::pair<torch::Tensor, torch::Tensor> apply_rope(const torch::Tensor& q, const torch::Tensor& k,
                                                   const torch::Tensor& cos, const torch::Tensor& sin,
                                                   bool fused);

// q: [B, H, Tq, d]; k, v: [B, Hkv, Tk, d] with H % Hkv == 0 (GQA); allowed: bool [B or 1, 1, Tq, Tk]
// (true = may attend) or undefined for none. Returns [B, H, Tq, d].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& allowed, double scale, bool fused);

// output_attentions: while an AttentionCapture lives, every nn::attention call on its thread appends its
// probabilities [B, H, Tq, Tk] (float32 softmax, cast to q's dtype, as transformers returns them) to `into`
// and runs the plain-ATen path. Calls outside one pay a thread-local read.
class AttentionCapture {
 public:
  explicit AttentionCapture(std::vector<torch::Tensor>* into);
  ~AttentionCapture();
  AttentionCapture(const AttentionCapture&) = delete;
  AttentionCapture& operator=(const AttentionCapture&) = delete;

 private:
  std::vector<torch::Tensor>* previous_;
};

// The plain-ATen attention: explicit scores, softmax in float32. The reference the others are tested against.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& allowed, double scale);

}  // namespace vlmzoo::nn
