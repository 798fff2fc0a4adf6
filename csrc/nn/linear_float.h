#pragma once
// The float path of nn::Linear. y = x W^T + b; x: [..., in]; weight: [out, in]; bias: [out] or undefined.
// fused: a float32 CPU input of 2..kFewRowsMax rows (a small batch's decode step) runs as one
// (W x^T + b)^T GEMM, which reads W once in its stored order; MKL's sgemm for x W^T is about 2x slower
// there (bench/RESULTS.md, "Fuyu decode: few-rows linear"). Otherwise, and unfused: torch::linear.
#include <torch/torch.h>

namespace vlmzoo::nn {

constexpr int64_t kFewRowsMax = 5;
torch::Tensor linear_float(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool fused);

}  // namespace vlmzoo::nn
