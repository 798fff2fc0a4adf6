// Attention against a naive triple loop, in both kernel paths, with GQA and masks.
#include <gtest/gtest.h>

#include "nn/functional.h"
#include "nn/masks.h"
#include "naive_attention.h"

using vlmzoo_test::naive_attention;

class AttentionPaths : public ::testing::TestWithParam<bool> {};

TEST_P(AttentionPaths, MatchesNaiveLoopsWithGqaPaddingAndCausalMask) {
  torch::manual_seed(0);
  const bool fused = GetParam();
  auto q = torch::randn({2, 6, 7, 16}), k = torch::randn({2, 2, 7, 16}), v = torch::randn({2, 2, 7, 16});
  auto padding = torch::tensor({{1, 1, 1, 1, 1, 1, 1}, {0, 0, 1, 1, 1, 1, 1}});
  auto allowed = vlmzoo::nn::causal_mask(7, 0, padding, torch::kCPU).expand({2, 1, 7, 7}).contiguous();
  auto expected = naive_attention(q, k, v, allowed, 0.25).to(torch::kFloat);
  auto actual = vlmzoo::nn::attention(q, k, v, allowed, 0.25, fused);
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-5, 1e-5)) << (actual - expected).abs().max();
}

TEST_P(AttentionPaths, CrossAttentionWithDifferentKeyLength) {
  torch::manual_seed(1);
  const bool fused = GetParam();
  auto q = torch::randn({1, 4, 5, 32}), k = torch::randn({1, 4, 11, 32}), v = torch::randn({1, 4, 11, 32});
  auto allowed = torch::rand({1, 1, 5, 11}) > 0.3;
  allowed.select(3, 0).fill_(true);
  auto expected = naive_attention(q, k, v, allowed, 0.125).to(torch::kFloat);
  auto actual = vlmzoo::nn::attention(q, k, v, allowed, 0.125, fused);
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-5, 1e-5)) << (actual - expected).abs().max();
}

INSTANTIATE_TEST_SUITE_P(FusedAndReference, AttentionPaths, ::testing::Values(true, false));

TEST(CausalMask, PaddingQueriesStillSeeThemselves) {
  auto mask = vlmzoo::nn::causal_mask(3, 2, torch::tensor({{0, 1, 1, 1, 1}}), torch::kCPU);
  EXPECT_EQ(mask.sizes(), (std::vector<int64_t>{1, 1, 3, 5}));
  EXPECT_FALSE(mask[0][0][0][0].item<bool>());  // padding key
  EXPECT_TRUE(mask[0][0][0][2].item<bool>());   // itself
  EXPECT_FALSE(mask[0][0][0][3].item<bool>());  // the future
}

TEST(CausalMask, PaddingAfterRealKeysSeesOnlyThem) {
  // BLIP-2's layout: real, padding, padding, real. Leading padding (row 0 of the second batch row)
  // sees only itself; later padding sees the real keys before it, not itself (as transformers).
  auto mask = vlmzoo::nn::causal_mask(4, 0, torch::tensor({{1, 0, 0, 1}, {0, 1, 1, 1}}), torch::kCPU);
  EXPECT_TRUE(mask[0][0][1][0].item<bool>());
  EXPECT_FALSE(mask[0][0][1][1].item<bool>());
  EXPECT_FALSE(mask[0][0][2][2].item<bool>());
  EXPECT_EQ(mask[0][0][3].sum().item<int64_t>(), 2);  // keys 0 and 3
  EXPECT_TRUE(mask[1][0][0][0].item<bool>());
  EXPECT_EQ(mask[1][0][0].sum().item<int64_t>(), 1);
}

// The fused path's backward (the tiled CPU kernel) against ATen's autograd through the reference.
TEST(AttentionBackward, GradientsMatchTheUnfusedPath) {
  torch::manual_seed(2);
  auto padding = torch::tensor({{1, 1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 1, 1, 1, 1, 1}});
  auto allowed = vlmzoo::nn::causal_mask(9, 0, padding, torch::kCPU).expand({2, 1, 9, 9}).contiguous();
  auto grad = torch::randn({2, 6, 9, 32});
  std::vector<torch::Tensor> grads[2];
  for (bool fused : {true, false}) {
    torch::manual_seed(3);
    auto q = torch::randn({2, 6, 9, 32}).requires_grad_(), k = torch::randn({2, 2, 9, 32}).requires_grad_();
    auto v = torch::randn({2, 2, 9, 32}).requires_grad_();
    auto out = vlmzoo::nn::attention(q, k, v, allowed, 0.2, fused);
    grads[fused] = torch::autograd::grad({out}, {q, k, v}, {grad});
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(torch::allclose(grads[1][i], grads[0][i], 1e-4, 1e-5)) << i << ": "
                                                                      << (grads[1][i] - grads[0][i]).abs().max();
}
