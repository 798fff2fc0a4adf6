// KV-cache decoding gives the tokens a full forward over the whole sequence picks.
#include <gtest/gtest.h>

#include "models/decoder_vlm.h"

namespace {
vlmzoo::models::DecoderVlm tiny_model() {
  auto json = vlmzoo::config::Json::parse(R"({
    "vision": {"image_size": 16, "patch_size": 8, "hidden": 32, "layers": 2, "heads": 2, "mlp": 64},
    "fusion": {"image_token_id": 3},
    "llm": {"vocab": 50, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 96}})");
  return vlmzoo::models::DecoderVlm(vlmzoo::models::parse_model_config(json));
}
}  // namespace

TEST(Decoding, CachedGreedyStepsEqualFullForwardArgmax) {
  torch::manual_seed(0);
  auto model = tiny_model();
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor({{1, 3, 3, 3, 3, 7, 8, 9}, {0, 0, 1, 3, 3, 3, 3, 12}});
  auto mask = (ids != 0).to(torch::kLong);
  auto pixels = torch::randn({2, 3, 16, 16});
  vlmzoo::models::GenerateOptions options;
  options.max_new_tokens = 4;
  auto out = model->generate({ids, pixels, mask}, options);
  ASSERT_EQ(out.size(1), 12);
  for (int64_t t = 8; t < 12; ++t) {
    auto prefix = out.narrow(1, 0, t);
    auto prefix_mask = torch::cat({mask, torch::ones({2, t - 8}, mask.options())}, 1);
    auto positions = (prefix_mask.cumsum(-1) - 1).clamp_min(0);
    auto logits = model->forward({prefix, pixels, prefix_mask, positions});
    EXPECT_TRUE(torch::equal(logits.select(1, t - 1).argmax(-1), out.select(1, t))) << "step " << t;
  }
}

TEST(Decoding, GreedyGenerateExtendsPromptAndStopsAtEos) {
  torch::manual_seed(0);
  auto model = tiny_model();
  auto ids = torch::tensor({{1, 3, 3, 3, 3, 7, 8}});
  auto pixels = torch::randn({1, 3, 16, 16});
  vlmzoo::models::GenerateOptions options;
  options.max_new_tokens = 5;
  auto out = model->generate({ids, pixels}, options);
  ASSERT_EQ(out.size(1), 12);
  EXPECT_TRUE(torch::equal(out.narrow(1, 0, 7), ids));
  options.eos_token_ids = {out[0][7].item<int64_t>()};
  EXPECT_EQ(model->generate({ids, pixels}, options).size(1), 8);
}

TEST(Decoding, ImageTokenMismatchThrowsValueError) {
  auto model = tiny_model();
  auto ids = torch::tensor({{1, 3, 3, 7}});
  EXPECT_THROW(model->forward({ids, torch::randn({1, 3, 16, 16})}), c10::ValueError);
}
