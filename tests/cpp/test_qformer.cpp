// The Q-Former abstractor built alone from the registry: its output shape, and the error for image
// features of a width it was not built for (a model's own vision encoder can never hand it those).
#include <gtest/gtest.h>

#include "models/registry.h"

namespace {

using vlmzoo::models::Abstractor;
using vlmzoo::models::BuildContext;
using vlmzoo::models::Registry;

std::shared_ptr<Abstractor> tiny_qformer(int64_t input_width) {
  vlmzoo::config::Json json = {{"kind", "qformer"}, {"queries", 4}, {"hidden", 16}, {"layers", 2},
                               {"heads", 2},       {"mlp", 24},    {"instruction", true}};
  vlmzoo::config::JsonReader reader(json, "abstractor");
  const auto* entry = Registry<Abstractor>::instance().find("qformer");
  auto config = entry->parse(reader);
  BuildContext context{std::make_shared<vlmzoo::nn::KernelPolicy>(), torch::TensorOptions(), input_width, 10, 20, 50};
  auto qformer = entry->build(*config, context);
  torch::NoGradGuard no_grad;
  for (auto& p : qformer->parameters()) p.normal_(0.0, 0.2);
  return qformer;
}

}  // namespace

TEST(QFormer, MapsImageFeaturesToQueryTokensOfTheLmWidth) {
  auto qformer = tiny_qformer(24);
  auto out = qformer->forward(torch::randn({3, 10, 24}), {torch::randint(0, 100, {3, 5}), torch::ones({3, 5})});
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 20}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST(QFormer, RefusesImageFeaturesOfAnotherWidth) {
  auto qformer = tiny_qformer(24);
  try {
    qformer->forward(torch::randn({3, 10, 32}), {});
    FAIL() << "no error for features of width 32";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("abstractor (qformer): expected image features of width 24, got 32"),
              std::string::npos)
        << e.what();
  }
}
