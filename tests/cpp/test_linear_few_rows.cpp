// nn::linear's few-rows path ((W x^T + b)^T for 2..kFewRowsMax float32 rows on CPU) against its reference
// path (torch::linear): fresh random inputs, odd widths, every row count around the range, batched and
// non-contiguous inputs, no bias, and the gradients of x, W and b; and nn::Linear taking it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nn/linear.h"
#include "nn/linear_float.h"

namespace {

using vlmzoo::nn::kFewRowsMax;

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-5, 1e-5)) << what << ": " << (actual - expected).abs().max();
}

TEST(LinearFewRows, MatchesReferenceForEveryRowCountAndOddWidths) {
  torch::manual_seed(0);
  for (int64_t rows = 1; rows <= kFewRowsMax + 2; ++rows) {
    for (auto [in, out] : {std::pair<int64_t, int64_t>{37, 101}, {64, 3}, {129, 67}}) {
      auto x = torch::randn({rows, in}), w = torch::randn({out, in}), b = torch::randn({out});
      const auto what = std::to_string(rows) + " rows, " + std::to_string(in) + " -> " + std::to_string(out);
      expect_close(vlmzoo::nn::linear_float(x, w, b, true), torch::linear(x, w, b), what);
      expect_close(vlmzoo::nn::linear_float(x, w, {}, true), torch::linear(x, w), what + " without bias");
      expect_close(vlmzoo::nn::linear_float(x, w, b, false), torch::linear(x, w, b), what + " reference");
    }
  }
}

TEST(LinearFewRows, BatchedAndNonContiguousInputs) {
  torch::manual_seed(1);
  auto w = torch::randn({45, 23}), b = torch::randn({45});
  auto batched = torch::randn({2, 1, 23});  // a batch-2 decode step: [B, 1, in]
  expect_close(vlmzoo::nn::linear_float(batched, w, b, true), torch::linear(batched, w, b), "[2, 1, in]");
  auto wide = torch::randn({3, 46});
  auto strided = wide.slice(1, 0, 46, 2);  // [3, 23], every other column
  ASSERT_FALSE(strided.is_contiguous());
  expect_close(vlmzoo::nn::linear_float(strided, w, b, true), torch::linear(strided, w, b), "strided x");
  auto transposed = torch::randn({23, 4}).t();  // [4, 23] as a transposed view
  expect_close(vlmzoo::nn::linear_float(transposed, w, b, true), torch::linear(transposed, w, b), "transposed x");
  auto w_t = torch::randn({23, 45}).t();  // a non-contiguous weight takes the reference path
  expect_close(vlmzoo::nn::linear_float(transposed, w_t, b, true), torch::linear(transposed, w_t, b), "transposed W");
  auto y = vlmzoo::nn::linear_float(batched, w, b, true);
  EXPECT_TRUE(y.is_contiguous());
}

TEST(LinearFewRows, GradientsMatchReference) {
  torch::manual_seed(2);
  for (int64_t rows : {int64_t{2}, int64_t{3}, kFewRowsMax}) {
    auto x = torch::randn({rows, 31}, torch::requires_grad()), w = torch::randn({19, 31}, torch::requires_grad());
    auto b = torch::randn({19}, torch::requires_grad());
    auto grad_out = torch::randn({rows, 19});
    auto fused = torch::autograd::grad({vlmzoo::nn::linear_float(x, w, b, true)}, {x, w, b}, {grad_out});
    auto reference = torch::autograd::grad({torch::linear(x, w, b)}, {x, w, b}, {grad_out});
    for (size_t i = 0; i < 3; ++i) expect_close(fused[i], reference[i], "grad " + std::to_string(i));
  }
}

TEST(LinearFewRows, ModuleTakesTheFewRowsPath) {
  torch::manual_seed(3);
  vlmzoo::nn::Linear layer(17, 29, true, torch::TensorOptions());
  torch::NoGradGuard no_grad;
  layer->weight.normal_();
  layer->bias.normal_();
  for (int64_t rows : {1, 2, 4, 9}) {
    auto x = torch::randn({rows, 17});
    expect_close(layer(x), torch::linear(x, layer->weight, layer->bias), std::to_string(rows) + " rows");
  }
}

}  // namespace
