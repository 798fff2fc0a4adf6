// The perceiver abstractor built alone from the registry: its latents come out at the vision width
// (or the LM width with "project"), and media of another width is refused naming the expected one.
#include <gtest/gtest.h>

#include "models/registry.h"

namespace {

using vlmzoo::models::Abstractor;
using vlmzoo::models::BuildContext;
using vlmzoo::models::Registry;

std::shared_ptr<Abstractor> tiny_perceiver(int64_t input_width, bool project) {
  vlmzoo::config::Json json = {{"kind", "perceiver"}, {"latents", 4}, {"layers", 2}, {"heads", 2},
                               {"head_dim", 8},       {"qk_norm", true}, {"project", project}};
  vlmzoo::config::JsonReader reader(json, "abstractor");
  const auto* entry = Registry<Abstractor>::instance().find("perceiver");
  auto config = entry->parse(reader);
  BuildContext context{std::make_shared<vlmzoo::nn::KernelPolicy>(), torch::TensorOptions(), input_width, 10, 20, 50};
  auto perceiver = entry->build(*config, context);
  torch::NoGradGuard no_grad;
  for (auto& p : perceiver->parameters()) p.normal_(0.0, 0.2);
  return perceiver;
}

}  // namespace

TEST(Perceiver, ResamplesMediaToLatentsOfTheVisionWidth) {
  auto perceiver = tiny_perceiver(24, false);
  auto out = perceiver->forward(torch::randn({3, 10, 24}), {});
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 24}));
  EXPECT_EQ(perceiver->output_width(), 24);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST(Perceiver, ProjectsIntoTheLmWidthWhenAsked) {
  auto perceiver = tiny_perceiver(24, true);
  EXPECT_EQ(perceiver->forward(torch::randn({2, 10, 24}), {}).sizes(), (std::vector<int64_t>{2, 4, 20}));
  EXPECT_EQ(perceiver->output_width(), 20);
}

TEST(Perceiver, RefusesMediaOfAnotherWidth) {
  auto perceiver = tiny_perceiver(24, false);
  try {
    perceiver->forward(torch::randn({3, 10, 32}), {});
    FAIL() << "no error for media of width 32";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("abstractor (perceiver): expected media features [images, tokens, 24], got [3, 10, 32]"),
              std::string::npos)
        << e.what();
  }
}
