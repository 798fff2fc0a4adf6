#pragma once
// Multihead attention pooling (transformers' SiglipMultiheadAttentionPoolingHead, the "MAP" head of
// big_vision): one learned probe attends to every token, then a pre-LN MLP with a residual.
//   tokens [N, P, hidden] -> pooled [N, hidden]
#include "nn/attention.h"
#include "nn/mlp.h"
#include "nn/norms.h"

namespace vlmzoo::nn {

class AttentionPoolImpl : public torch::nn::Module {
 public:
  AttentionPoolImpl(int64_t hidden, int64_t heads, int64_t mlp, const std::string& act, double eps,
                    KernelPolicyPtr policy, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& tokens);  // [N, P, hidden] -> [N, hidden]

  torch::Tensor probe;  // [1, 1, hidden]
  Attention attn{nullptr};
  LayerNorm norm{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(AttentionPool);

}  // namespace vlmzoo::nn
