// KV-cache decoding gives the logits of a full forward over the whole sequence.
#include <gtest/gtest.h>

#include "models/vlm_model.h"

namespace {
vlmzoo::models::VlmModel tiny_model() {
  auto json = vlmzoo::config::Json::parse(R"({
    "vision": {"image_size": 16, "patch_size": 8, "hidden": 32, "layers": 2, "heads": 2, "mlp": 64},
    "fusion": {"image_token_id": 3},
    "llm": {"vocab": 50, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "mlp": 96}})");
  return vlmzoo::models::VlmModel(vlmzoo::config::parse_model_config(json));
}
}  // namespace

TEST(Decoding, CachedStepsEqualFullForward) {
  torch::manual_seed(0);
  auto model = tiny_model();
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor({{1, 3, 3, 3, 3, 7, 8, 9, 10, 11}, {0, 0, 1, 3, 3, 3, 3, 12, 13, 14}});
  auto mask = (ids != 0).to(torch::kLong);
  mask[0][0] = 1;
  auto pixels = torch::randn({2, 3, 16, 16});
  auto positions = (mask.cumsum(-1) - 1).clamp_min(0);
  auto full = model->llm->logits(model->llm(model->input_embeddings(ids, pixels), mask, positions));

  // Prefill 7 tokens, then feed the last 3 one at a time through the cache.
  std::vector<vlmzoo::nn::KVCache> caches(2);
  auto embeds = model->input_embeddings(ids, pixels);
  auto step = model->llm->logits(model->llm(embeds.narrow(1, 0, 7), mask.narrow(1, 0, 7), positions.narrow(1, 0, 7), &caches));
  EXPECT_TRUE(torch::allclose(step, full.narrow(1, 0, 7), 1e-5, 1e-5));
  for (int64_t t = 7; t < 10; ++t) {
    auto logits = model->llm->logits(
        model->llm(embeds.narrow(1, t, 1), mask.narrow(1, 0, t + 1), positions.narrow(1, t, 1), &caches));
    EXPECT_TRUE(torch::allclose(logits.select(1, 0), full.select(1, t), 1e-5, 1e-5)) << "step " << t;
  }
  EXPECT_EQ(caches[0].length, 10);
}

TEST(Decoding, GreedyGenerateExtendsPromptAndStopsAtEos) {
  torch::manual_seed(0);
  auto model = tiny_model();
  auto ids = torch::tensor({{1, 3, 3, 3, 3, 7, 8}});
  auto pixels = torch::randn({1, 3, 16, 16});
  vlmzoo::models::GenerateOptions options;
  options.max_new_tokens = 5;
  auto out = model->generate(ids, pixels, {}, options);
  ASSERT_EQ(out.size(1), 12);
  EXPECT_TRUE(torch::equal(out.narrow(1, 0, 7), ids));
  options.eos_token_ids = {out[0][7].item<int64_t>()};
  EXPECT_EQ(model->generate(ids, pixels, {}, options).size(1), 8);
}

TEST(Decoding, ImageTokenMismatchThrowsValueError) {
  auto model = tiny_model();
  auto ids = torch::tensor({{1, 3, 3, 7}});
  EXPECT_THROW(model->forward(ids, torch::randn({1, 3, 16, 16}), {}, {}), c10::ValueError);
}
