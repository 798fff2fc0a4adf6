// nn::Linear's weight formats (nn/linear.h): the same layer switched from float to bf16 storage or int8
// gives what the packed-weight ops give on its weights, on odd sizes and non-contiguous inputs; the
// packed tensors replace `weight` among the parameters; switching twice and training are refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/linear.h"
#include "ops/linear_formats.h"
#include "ops/reference.h"

namespace {
using vlmzoo::nn::Linear;
using vlmzoo::nn::WeightFormat;
// (in_features, out_features): odd, fewer than one 64-column panel, one more than a panel.
const std::vector<std::pair<int64_t, int64_t>> kSizes = {{37, 70}, {130, 5}, {64, 129}};

Linear random_linear(int64_t in, int64_t out, bool bias) {
  Linear linear(in, out, bias, torch::TensorOptions().dtype(torch::kFloat32));
  torch::NoGradGuard no_grad;
  linear->weight.copy_(torch::randn({out, in}) * (1.0 / std::sqrt(static_cast<double>(in))));
  if (bias) linear->bias.copy_(torch::randn({out}) * 0.1);
  return linear;
}

// [2, 5, in] read through a transpose: not contiguous.
torch::Tensor non_contiguous_input(int64_t in) { return torch::randn({2, in, 5}).transpose(1, 2); }

std::vector<std::string> parameter_names(const Linear& linear) {
  std::vector<std::string> names;
  for (const auto& item : linear->named_parameters()) names.push_back(item.key());
  return names;
}

TEST(LinearWeightFormats, Bf16StorageEqualsFloatArithmeticOnTheRoundedWeights) {
  torch::manual_seed(3);
  for (auto [in, out] : kSizes) {
    auto linear = random_linear(in, out, /*bias=*/true);
    const auto w = linear->weight.detach().clone(), b = linear->bias.detach().clone();
    auto x = non_contiguous_input(in);
    ASSERT_FALSE(x.is_contiguous());
    linear->set_weight_format(WeightFormat::kBf16);
    EXPECT_EQ(linear->weight_format(), WeightFormat::kBf16);
    EXPECT_EQ(parameter_names(linear), (std::vector<std::string>{"bias", "weight_bf16"}));
    EXPECT_FALSE(linear->weight.defined());
    auto y = linear->forward(x);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, out}));
    EXPECT_TRUE(torch::allclose(y, torch::linear(x, w.to(torch::kBFloat16).to(torch::kFloat32), b), 1e-4, 1e-4));
    EXPECT_EQ(linear->in_features(), in);
    EXPECT_EQ(linear->out_features(), out);
  }
}

TEST(LinearWeightFormats, Int8MatchesTheReferenceOpAndStaysNearFloat) {
  torch::manual_seed(4);
  for (auto [in, out] : kSizes) {
    for (bool bias : {true, false}) {
      auto linear = random_linear(in, out, bias);
      const auto w = linear->weight.detach().clone();
      const auto b = bias ? linear->bias.detach().clone() : torch::Tensor();
      auto x = non_contiguous_input(in);
      const auto expected = torch::linear(x, w, b);
      linear->set_weight_format(WeightFormat::kInt8);
      EXPECT_EQ(parameter_names(linear),
                bias ? (std::vector<std::string>{"bias", "weight_int8", "weight_scales", "weight_col_sums"})
                     : (std::vector<std::string>{"weight_int8", "weight_scales", "weight_col_sums"}));
      EXPECT_FALSE(linear->weight_int8.requires_grad() || linear->weight_scales.requires_grad() ||
                   linear->weight_col_sums.requires_grad());
      if (bias) {
        EXPECT_TRUE(linear->bias.requires_grad());
      }
      auto y = linear->forward(x);
      std::optional<at::Tensor> optional_bias = bias ? std::optional<at::Tensor>(b) : std::nullopt;
      auto reference = vlmzoo::ops::reference_linear_int8(x, linear->weight_int8, linear->weight_scales,
                                                           linear->weight_col_sums, optional_bias);
      EXPECT_TRUE(torch::allclose(y, reference, 1e-4, 1e-4));
      // Per-channel weights and per-token activations: a few percent of the output's size.
      const double error = ((y - expected).norm() / expected.norm()).item<double>();
      EXPECT_GT(error, 0.0);
      EXPECT_LT(error, 0.05) << in << " -> " << out;
    }
  }
}

TEST(LinearWeightFormats, ForwardWithAnotherBiasUsesThePackedWeight) {
  torch::manual_seed(5);
  auto linear = random_linear(45, 96, /*bias=*/false);
  const auto w = linear->weight.detach().clone();
  auto other_bias = torch::randn({96});
  auto x = torch::randn({3, 45});
  linear->set_weight_format(WeightFormat::kBf16);
  EXPECT_TRUE(torch::allclose(linear->forward_with_bias(x, other_bias),
                              torch::linear(x, w.to(torch::kBFloat16).to(torch::kFloat32), other_bias), 1e-4, 1e-4));
}

TEST(LinearWeightFormats, PackingTwiceAndTrainingAreRefused) {
  auto linear = random_linear(16, 8, /*bias=*/true);
  linear->set_weight_format(WeightFormat::kInt8);
  EXPECT_THROW(linear->set_weight_format(WeightFormat::kBf16), c10::Error);
  EXPECT_THROW(linear->set_weight_format(WeightFormat::kInt8), c10::Error);
  EXPECT_THROW(linear->train(true), c10::Error);
  linear->train(false);
  EXPECT_FALSE(linear->is_training());
}

TEST(LinearWeightFormats, ModelWideSwitchPacksEveryLinearOrNone) {
  torch::nn::Sequential block(random_linear(12, 20, true), torch::nn::ReLU(),
                              random_linear(20, 7, false));
  EXPECT_EQ(vlmzoo::nn::weight_format_of(*block), WeightFormat::kFloat);
  EXPECT_EQ(vlmzoo::nn::set_weight_format(*block, WeightFormat::kInt8), 2);
  EXPECT_EQ(vlmzoo::nn::weight_format_of(*block), WeightFormat::kInt8);
  EXPECT_THROW(vlmzoo::nn::set_weight_format(*block, WeightFormat::kBf16), c10::Error);
  EXPECT_EQ(vlmzoo::nn::weight_format_of(*block), WeightFormat::kInt8);
}

TEST(LinearWeightFormats, FormatNamesRoundTripAndUnknownNamesListTheChoices) {
  for (auto format : {WeightFormat::kFloat, WeightFormat::kBf16, WeightFormat::kInt8})
    EXPECT_EQ(vlmzoo::nn::weight_format_named(vlmzoo::nn::weight_format_name(format)), format);
  try {
    vlmzoo::nn::weight_format_named("fp8");
    FAIL() << "fp8 was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"fp8\" is not one of float, bf16, int8"), std::string::npos);
  }
}

}  // namespace
