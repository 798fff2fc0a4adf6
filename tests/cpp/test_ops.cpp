// The fused ops called from C++ through the dispatcher, against definitions written as plain loops.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "ops/cpu/dispatch.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "naive_attention.h"

namespace {

using vlmzoo_test::naive_attention;

struct AttentionCase {
  int64_t batch, heads, kv_heads, q_tokens, k_tokens, head_dim;
};

class FusedAttention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(FusedAttention, MatchesNaiveLoopsWithCausalAndPaddingMasks) {
  const auto c = GetParam();
  torch::manual_seed(c.q_tokens * 131 + c.k_tokens);
  auto q = torch::randn({c.batch, c.heads, c.q_tokens, c.head_dim});
  auto k = torch::randn({c.batch, c.kv_heads, c.k_tokens, c.head_dim});
  auto v = torch::randn({c.batch, c.kv_heads, c.k_tokens, c.head_dim});
  // Causal over the last q_tokens positions, and the first batch row pads away its last 3 keys.
  auto allowed = torch::ones({c.q_tokens, c.k_tokens}, torch::kBool).tril(c.k_tokens - c.q_tokens);
  allowed = allowed.expand({c.batch, 1, c.q_tokens, c.k_tokens}).clone();
  allowed[0].narrow(-1, c.k_tokens - 3, 3).fill_(false);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  auto expected = naive_attention(q, k, v, allowed, scale);
  auto actual = vlmzoo::ops::attention(q, k, v, allowed, scale);
  EXPECT_TRUE(torch::allclose(actual.to(torch::kFloat64), expected, 1e-5, 1e-5))
      << "max error " << (actual.to(torch::kFloat64) - expected).abs().max().item<double>();
  auto unmasked = vlmzoo::ops::attention(q, k, v, std::nullopt, std::nullopt);
  EXPECT_TRUE(torch::allclose(unmasked.to(torch::kFloat64), naive_attention(q, k, v, {}, scale), 1e-5, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedAttention,
                         ::testing::Values(AttentionCase{2, 4, 2, 37, 37, 64},      // prefill, GQA
                                           AttentionCase{1, 2, 2, 70, 700, 32},     // several key blocks
                                           AttentionCase{2, 4, 1, 1, 1029, 128},    // decode over a long cache
                                           AttentionCase{1, 3, 3, 9, 23, 80}));     // cross attention

TEST(FusedRmsNorm, MatchesLlamaConventionInFloat32) {
  torch::manual_seed(7);
  auto x = torch::randn({3, 5, 77}), weight = torch::randn({77});
  auto expected = weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6));
  EXPECT_TRUE(torch::allclose(vlmzoo::ops::rms_norm(x, weight, 1e-6), expected, 1e-5, 1e-5));
}

TEST(FusedRmsNorm, AddVariantReturnsTheSumAndItsNorm) {
  torch::manual_seed(8);
  auto x = torch::randn({4, 100}, torch::kBFloat16), residual = torch::randn({4, 100}, torch::kBFloat16);
  auto weight = torch::randn({100}, torch::kBFloat16);
  auto [sum, normed] = vlmzoo::ops::add_rms_norm(x, residual, weight, 1e-6);
  EXPECT_TRUE(torch::equal(sum, x + residual));
  EXPECT_TRUE(torch::allclose(normed.to(torch::kFloat32),
                              vlmzoo::ops::reference_rms_norm(sum, weight, 1e-6).to(torch::kFloat32), 1e-2, 1e-2));
}

TEST(FusedLayerNorm, MatchesTorchLayerNorm) {
  torch::manual_seed(9);
  auto x = torch::randn({2, 9, 93}), weight = torch::randn({93}), bias = torch::randn({93});
  auto expected = torch::layer_norm(x, {93}, weight, bias, 1e-5);
  EXPECT_TRUE(torch::allclose(vlmzoo::ops::layer_norm(x, weight, bias, 1e-5), expected, 1e-5, 1e-5));
}

TEST(FusedAttentionAutograd, GradientsFlowFromCpp) {
  torch::manual_seed(10);
  auto q = torch::randn({1, 2, 5, 16}, torch::requires_grad()), k = torch::randn({1, 1, 7, 16}, torch::requires_grad());
  auto v = torch::randn({1, 1, 7, 16}, torch::requires_grad());
  vlmzoo::ops::attention(q, k, v, std::nullopt, std::nullopt).sum().backward();
  auto q2 = q.detach().clone().requires_grad_(), k2 = k.detach().clone().requires_grad_();
  auto v2 = v.detach().clone().requires_grad_();
  vlmzoo::ops::reference_attention(q2, k2, v2, std::nullopt, std::nullopt).sum().backward();
  EXPECT_TRUE(torch::allclose(q.grad(), q2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(k.grad(), k2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(v.grad(), v2.grad(), 1e-5, 1e-5));
}

// Every kernel copy this CPU can run (AVX-512 and AVX2 on an AVX-512 machine), called directly
// rather than through the dispatcher, which runs only the best one.
TEST(CpuKernelCopies, EachSupportedCopyMatchesNaiveLoops) {
  using namespace vlmzoo::ops::cpu;
  torch::manual_seed(11);
  int copies = 0;
  for (Isa isa : supported_isas()) {
    const Kernels* kernels = kernels_for(isa);
    if (kernels == nullptr) continue;
    ++copies;
    SCOPED_TRACE(isa_name(isa));
    for (const auto& c : {AttentionCase{2, 4, 2, 1, 300, 64}, AttentionCase{1, 4, 2, 19, 45, 24}}) {
      auto q = torch::randn({c.batch, c.heads, c.q_tokens, c.head_dim});
      auto k = torch::randn({c.batch, c.kv_heads, c.k_tokens, c.head_dim});
      auto v = torch::randn({c.batch, c.kv_heads, c.k_tokens, c.head_dim});
      auto allowed = torch::rand({c.batch, 1, c.q_tokens, c.k_tokens}) > 0.3;
      auto out = kernels->attention(q, k, v, allowed, 0.2);
      EXPECT_TRUE(torch::allclose(out.to(torch::kFloat64), naive_attention(q, k, v, allowed, 0.2), 1e-5, 1e-5));
    }
    auto x = torch::randn({5, 37}), weight = torch::randn({37});
    auto normed = std::get<1>(kernels->rms_norm(x, torch::Tensor(), weight, 1e-6));
    EXPECT_TRUE(torch::allclose(normed, weight * x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6), 1e-5, 1e-5));
  }
  EXPECT_EQ(copies + 1, static_cast<int>(supported_isas().size()));  // all but the reference
}

TEST(CpuKernelCopies, TheBestSupportedLevelRunsUnlessOneIsForced) {
  using namespace vlmzoo::ops::cpu;
  const auto supported = supported_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.back(), Isa::reference);
  const char* forced = std::getenv("VLMZOO_CPU_ISA");
  if (forced == nullptr || *forced == '\0') EXPECT_EQ(active_isa(), supported.front());
  else EXPECT_STREQ(isa_name(active_isa()), forced);
}

}  // namespace
