// The packed-weight linear kernels of every CPU copy (AVX-512 and AVX2 on an AVX-512 machine), called
// directly, against plain loops over the unpacked weights; and the C++ entry points through the dispatcher.
#include <gtest/gtest.h>
#include <cmath>
#include <algorithm>
#include <torch/torch.h>

#include "ops/cpu/dispatch.h"
#include "ops/linear_formats.h"
#include "ops/ops.h"
#include "ops/reference.h"

namespace {

using vlmzoo::ops::ceil_div;

// out[m, n] = sum_k x[m, k] * w[n, k] + bias[n], in float64 scalar loops.
torch::Tensor naive_linear(const torch::Tensor& x_in, const torch::Tensor& w_in, const torch::Tensor& bias_in) {
  auto x = x_in.to(torch::kFloat64).contiguous(), w = w_in.to(torch::kFloat64).contiguous();
  auto bias = bias_in.to(torch::kFloat64).contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto out = torch::empty({M, N}, torch::kFloat64);
  auto xa = x.accessor<double, 2>(), wa = w.accessor<double, 2>();
  auto ba = bias.accessor<double, 1>();
  auto oa = out.accessor<double, 2>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = ba[n];
      for (int64_t k = 0; k < K; ++k) s += xa[m][k] * wa[n][k];
      oa[m][n] = s;
    }
  return out;
}

struct Shape {
  int64_t m, k, n;
};
const Shape kShapes[] = {{1, 7, 5}, {2, 64, 64}, {3, 67, 130}, {7, 33, 97}, {40, 45, 70}, {13, 200, 1}, {40, 2051, 70}};

// Switches linear_bf16's AMX prefill path (ops/linear_formats.h) for one scope, restoring the default (on).
struct Bf16Amx {
  explicit Bf16Amx(bool on) { vlmzoo::ops::set_bf16_amx(on); }
  ~Bf16Amx() { vlmzoo::ops::set_bf16_amx(true); }
};

TEST(LinearKernelCopies, Bf16OfEverySupportedCopyMatchesPlainLoops) {
  using namespace vlmzoo::ops::cpu;
  const Bf16Amx float32_arithmetic(false);  // the widening kernels; the AMX path has its own test below
  torch::manual_seed(21);
  int tested = 0;
  for (Isa isa : supported_isas()) {
    const Kernels* kernels = kernels_for(isa);
    if (kernels == nullptr || kernels->linear_bf16 == nullptr) continue;
    ++tested;
    SCOPED_TRACE(isa_name(isa));
    for (const auto& s : kShapes) {
      SCOPED_TRACE("m " + std::to_string(s.m) + " k " + std::to_string(s.k) + " n " + std::to_string(s.n));
      auto x = torch::randn({s.m, s.k}), w = torch::randn({s.n, s.k}), bias = torch::randn({s.n});
      auto out = kernels->linear_bf16(x, vlmzoo::ops::pack_linear_bf16(w), s.n, bias);
      auto expected = naive_linear(x, w.to(torch::kBFloat16), bias);
      EXPECT_TRUE(torch::allclose(out.to(torch::kFloat64), expected, 1e-4, 1e-4));
    }
  }
#if defined(__x86_64__)
  EXPECT_EQ(tested + 1, static_cast<int>(supported_isas().size()));  // every copy but the reference
#else
  EXPECT_GE(tested, 0);
#endif
}

TEST(LinearKernelCopies, Bf16OnAmxMultipliesActivationsRoundedToBf16) {
  using namespace vlmzoo::ops::cpu;
  const Bf16Amx tiles(true);
  if (!vlmzoo::ops::bf16_amx()) GTEST_SKIP() << "this CPU has no AMX-BF16";
  const Kernels* kernels = kernels_for(Isa::avx512);
  ASSERT_NE(kernels, nullptr);
  torch::manual_seed(23);
  for (const auto& s : kShapes) {
    SCOPED_TRACE("m " + std::to_string(s.m) + " k " + std::to_string(s.k) + " n " + std::to_string(s.n));
    auto x = torch::randn({s.m, s.k}), w = torch::randn({s.n, s.k}), bias = torch::randn({s.n});
    auto out = kernels->linear_bf16(x, vlmzoo::ops::pack_linear_bf16(w), s.n, bias).to(torch::kFloat64);
    // More than kBf16ExactRows rows: x rounded to bf16 (the products are then exact); fewer: float32 x.
    const bool tiles_used = s.m > vlmzoo::ops::kBf16ExactRows;
    auto expected = naive_linear(tiles_used ? x.to(torch::kBFloat16) : x, w.to(torch::kBFloat16), bias);
    const double atol = 1e-4 * std::max(1.0, std::sqrt(s.k / 256.0));
    EXPECT_TRUE(torch::allclose(out, expected, 1e-4, atol));
  }
}

TEST(LinearKernelCopies, Int8MatchesTheReferenceExactlyUpToFloatRounding) {
  using namespace vlmzoo::ops::cpu;
  if (!cpu_has_avx512_vnni()) GTEST_SKIP() << "this CPU has no AVX512-VNNI";
  torch::manual_seed(22);
  const Kernels* kernels = kernels_for(Isa::avx512);
  ASSERT_NE(kernels, nullptr);
  ASSERT_NE(kernels->linear_int8, nullptr);
  for (const auto& s : kShapes) {
    SCOPED_TRACE("m " + std::to_string(s.m) + " k " + std::to_string(s.k) + " n " + std::to_string(s.n));
    auto x = torch::randn({s.m, s.k}), bias = torch::randn({s.n});
    auto [packed, scales, col_sums] = vlmzoo::ops::quantize_linear_int8(torch::randn({s.n, s.k}));
    auto out = kernels->linear_int8(x, packed, scales, col_sums, bias);
    auto expected = vlmzoo::ops::reference_linear_int8(x, packed, scales, col_sums, bias);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5 * expected.abs().max().item<double>()));
  }
}

TEST(LinearOps, CppEntryPointsRunThroughTheDispatcher) {
  torch::manual_seed(23);
  auto x = torch::randn({2, 3, 40}), w = torch::randn({33, 40}), bias = torch::randn({33});
  auto packed = vlmzoo::ops::pack_linear_bf16(w);
  EXPECT_EQ(packed.sizes(), (std::vector<int64_t>{ceil_div(33, vlmzoo::ops::kBf16PanelCols), 20,
                                                  vlmzoo::ops::kBf16PanelCols, 2}));
  auto out = vlmzoo::ops::linear_bf16(x, packed, 33, bias);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 33}));
  EXPECT_TRUE(torch::allclose(out, torch::nn::functional::linear(x, w.to(torch::kBFloat16).to(torch::kFloat), bias),
                              1e-4, 1e-4));
  auto [q, scales, col_sums] = vlmzoo::ops::quantize_linear_int8(w);
  auto out8 = vlmzoo::ops::linear_int8(x, q, scales, col_sums, bias);
  auto expected = vlmzoo::ops::reference_linear_int8(x, q, scales, col_sums, bias);
  EXPECT_TRUE(torch::allclose(out8, expected, 1e-5, 1e-4));
}

TEST(LinearOps, AMismatchedPackingIsAClearError) {
  auto packed = vlmzoo::ops::pack_linear_bf16(torch::randn({33, 40}));
  try {
    vlmzoo::ops::linear_bf16(torch::randn({2, 41}), packed, 33, std::nullopt);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("packed_weight must be"), std::string::npos) << e.what();
  }
}

}  // namespace
