// Config parsing: defaults, round-trip, and errors that name the JSON path.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "config/model_config.h"

using vlmzoo::config::ConfigError;
using vlmzoo::config::Json;
using vlmzoo::config::parse_model_config;

namespace {
Json tiny_preset() {
  std::ifstream file(std::string(VLMZOO_SOURCE_DIR) + "/configs/tiny/llava-1.5-tiny.json");
  std::stringstream text;
  text << file.rdbuf();
  return Json::parse(text.str());
}

std::string error_of(const Json& json) {
  try {
    parse_model_config(json);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, TinyPresetParsesWithDerivedFields) {
  auto c = parse_model_config(tiny_preset());
  EXPECT_EQ(c.llm.head_dim, 32);
  EXPECT_EQ(c.vision.patches_per_image(), 64);
  EXPECT_EQ(c.visual_tokens_per_image(), 64);
  EXPECT_EQ(c.vision.resolved_feature_layers(), std::vector<int>{2});
}

TEST(Config, ResolvedConfigRoundTrips) {
  auto once = vlmzoo::config::to_json(parse_model_config(tiny_preset()));
  auto twice = vlmzoo::config::to_json(parse_model_config(once));
  EXPECT_EQ(once, twice);
}

TEST(Config, EmptyConfigIsLlava15With7bShapes) {
  auto c = parse_model_config(Json::object());
  EXPECT_EQ(c.family, "llava");
  EXPECT_EQ(c.vision.image_size, 336);
  EXPECT_EQ(c.visual_tokens_per_image(), 576);
  EXPECT_EQ(c.llm.layers, 32);
}

TEST(Config, ErrorsNameTheJsonPath) {
  auto json = tiny_preset();
  json["llm"]["kv_heads"] = 5;
  EXPECT_EQ(error_of(json), "llm.kv_heads: 5 does not divide llm.heads 8");

  json = tiny_preset();
  json["vision"]["pach_size"] = 8;
  EXPECT_EQ(error_of(json), "vision.pach_size: unknown key (did you mean \"vision.patch_size\"?)");

  json = tiny_preset();
  json["abstractor"]["kind"] = "mpl";
  EXPECT_NE(error_of(json).find("abstractor.kind: \"mpl\" is not one of"), std::string::npos);
}

TEST(Config, InvalidJsonTextIsAConfigError) {
  EXPECT_THROW(vlmzoo::config::parse_model_config_string("{\"llm\": "), ConfigError);
}
