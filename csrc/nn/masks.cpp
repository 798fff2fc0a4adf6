#include "nn/masks.h"

namespace vlmzoo::nn {

torch::Tensor causal_mask(int64_t query_len, int64_t past_len, const torch::Tensor& key_padding,
                          const torch::Device& device) {
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto query_pos = torch::arange(past_len, past_len + query_len, long_opts).unsqueeze(1);  // [T, 1]
  auto key_pos = torch::arange(past_len + query_len, long_opts).unsqueeze(0);              // [1, S]
  auto allowed = (key_pos <= query_pos).view({1, 1, query_len, past_len + query_len});
  if (!key_padding.defined()) return allowed;
  TORCH_CHECK_VALUE(key_padding.dim() == 2 && key_padding.size(1) == past_len + query_len,
                    "attention_mask: expected [batch, ", past_len + query_len, "], got ", key_padding.sizes());
  auto real = key_padding.to(torch::kBool).view({key_padding.size(0), 1, 1, past_len + query_len});
  allowed = allowed & real;
  // A query with no real key at or before it (leading padding) attends to itself alone, so no row is
  // empty; any other padding query sees the real keys only, as in transformers (BLIP-2's processor puts
  // padding between the image tokens and the text, and those rows' logits are compared too).
  auto self = (key_pos == query_pos).view({1, 1, query_len, past_len + query_len});
  return allowed | (self & ~allowed.any(-1, /*keepdim=*/true));
}

torch::Tensor padding_mask(int64_t query_len, int64_t past_len, const torch::Tensor& key_padding,
                           const torch::Device& device) {
  if (!key_padding.defined()) return torch::Tensor();
  const int64_t keys = past_len + query_len;
  TORCH_CHECK_VALUE(key_padding.dim() == 2 && key_padding.size(1) == keys, "attention_mask: expected [batch, ", keys,
                    "], got ", key_padding.sizes());
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  auto self = (torch::arange(keys, long_opts).unsqueeze(0) ==
               torch::arange(past_len, keys, long_opts).unsqueeze(1)).view({1, 1, query_len, keys});
  return key_padding.to(torch::kBool).view({key_padding.size(0), 1, 1, keys}) | self;
}

}  // namespace vlmzoo::nn
