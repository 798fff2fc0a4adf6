#pragma once
#include <torch/torch.h>

namespace vlmzoo::nn {

// Causal mask with padding: allowed[b, 0, i, j] = key j is not padding and j <= past + i.
// key_padding: [B, S] (1 = real token) or undefined; S = past + T. A query with no real key at or
// before it attends to itself alone, so no row is empty (its output is never used).
// Returns bool [B|1, 1, T, S].
torch::Tensor causal_mask(int64_t query_len, int64_t past_len, const torch::Tensor& key_padding,
                          const torch::Device& device);

}  // namespace vlmzoo::nn
