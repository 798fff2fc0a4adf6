#pragma once
#include <torch/torch.h>

namespace vlmzoo::nn {

// Causal mask with padding: allowed[b, 0, i, j] = key j is not padding and j <= past + i.
// key_padding: [B, S] (1 = real token) or undefined; S = past + T. A query with no real key at or
// before it attends to itself alone, so no row is empty (its output is never used).
// Returns bool [B|1, 1, T, S].
torch::Tensor causal_mask(int64_t query_len, int64_t past_len, const torch::Tensor& key_padding,
                          const torch::Device& device);

// Bidirectional mask: every query may attend to every real key (and to itself). Returns bool
// [B|1, 1, T, S], or undefined when there is no padding (attend to everything).
torch::Tensor padding_mask(int64_t query_len, int64_t past_len, const torch::Tensor& key_padding,
                           const torch::Device& device);

}  // namespace vlmzoo::nn
