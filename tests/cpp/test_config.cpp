// Config parsing: defaults, round-trip, and errors that name the JSON path.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "models/decoder_vlm.h"

using vlmzoo::config::ConfigError;
using vlmzoo::config::Json;
using vlmzoo::models::ModelConfig;
using vlmzoo::models::parse_model_config;

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
  auto json = vlmzoo::models::to_json(parse_model_config(tiny_preset()));
  EXPECT_EQ(json["llm"]["head_dim"], 32);
  EXPECT_EQ(json["llm"]["kv_heads"], 4);
  vlmzoo::models::DecoderVlm model(parse_model_config(tiny_preset()), torch::TensorOptions().device(torch::kMeta), false);
  EXPECT_EQ(model->visual_tokens_per_image(), 64);
}

TEST(Config, ResolvedConfigRoundTrips) {
  auto once = vlmzoo::models::to_json(parse_model_config(tiny_preset()));
  auto twice = vlmzoo::models::to_json(parse_model_config(once));
  EXPECT_EQ(once, twice);
}

TEST(Config, EmptyConfigIsLlava15With7bShapes) {
  auto c = parse_model_config(Json::object());
  EXPECT_EQ(c.family, "llava");
  auto json = vlmzoo::models::to_json(c);
  EXPECT_EQ(json["vision"]["image_size"], 336);
  EXPECT_EQ(json["llm"]["layers"], 32);
  vlmzoo::models::DecoderVlm model(c, torch::TensorOptions().device(torch::kMeta), false);
  EXPECT_EQ(model->visual_tokens_per_image(), 576);
}

TEST(Config, UnknownKindNamesTheSlotAndListsTheRegisteredKinds) {
  auto json = tiny_preset();
  json["abstractor"] = {{"kind", "perciever"}};
  auto message = error_of(json);
  EXPECT_NE(message.find("abstractor.kind: \"perciever\" is not one of the registered abstractor kinds"), std::string::npos)
      << message;
  EXPECT_NE(message.find("\"mlp\""), std::string::npos) << message;
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
  EXPECT_THROW(vlmzoo::models::parse_model_config_string("{\"llm\": "), ConfigError);
}
