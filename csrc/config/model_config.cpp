#include "config/model_config.h"

#include <sstream>

namespace vlmzoo::config {

namespace {

const std::vector<std::string> kActivations = {"gelu", "gelu_tanh", "quick_gelu", "relu", "relu2", "silu"};

void check_positive(JsonReader& r, const std::string& key, int value) {
  if (value <= 0) r.fail(key, std::to_string(value) + " must be a positive integer");
}

void check_divides(JsonReader& r, const std::string& key, int divisor, const std::string& other_key, int dividend) {
  if (dividend % divisor != 0) {
    r.fail(key, std::to_string(divisor) + " does not divide " + r.path_of(other_key) + " " +
                    std::to_string(dividend));
  }
}

// Family presets: the defaults a family brings before the user's fields apply.
void apply_family_defaults(const std::string& family, ModelConfig& c) {
  if (family == "llava") {
    // LLaVA-1.5: CLIP ViT-L/14-336, 2-layer gelu MLP projector, splice, Vicuna/Llama-2 7B.
    c = ModelConfig{};
    c.family = family;
  }
}

VisionConfig parse_vision(JsonReader r, VisionConfig c) {
  c.kind = r.get_choice("kind", c.kind, {"vit", "none"});
  if (c.kind == "none") {
    r.reject_unknown_keys();
    return c;
  }
  c.style = r.get_choice("style", c.style, {"clip", "siglip"});
  if (c.style == "siglip") {  // style-level defaults, overridable below
    c.class_token = false;
    c.pre_norm = false;
    c.patch_bias = true;
    c.act = "gelu_tanh";
    c.eps = 1e-6;
    c.select = "full";
    c.feature_layers = {-1};
  }
  c.image_size = r.get_int("image_size", c.image_size);
  c.patch_size = r.get_int("patch_size", c.patch_size);
  c.channels = r.get_int("channels", c.channels);
  c.hidden = r.get_int("hidden", c.hidden);
  c.layers = r.get_int("layers", c.layers);
  c.heads = r.get_int("heads", c.heads);
  c.mlp = r.get_int("mlp", c.mlp);
  c.act = r.get_choice("act", c.act, kActivations);
  c.eps = r.get_double("eps", c.eps);
  c.class_token = r.get_bool("class_token", c.class_token);
  c.pre_norm = r.get_bool("pre_norm", c.pre_norm);
  c.post_norm = r.get_bool("post_norm", c.post_norm);
  c.patch_bias = r.get_bool("patch_bias", c.patch_bias);
  c.feature_layers = r.get_int_list("feature_layers", c.feature_layers);
  c.select = r.get_choice("select", c.select, {"default", "full"});
  r.reject_unknown_keys();

  for (auto [key, value] : {std::pair<const char*, int>{"image_size", c.image_size}, {"patch_size", c.patch_size},
                            {"channels", c.channels}, {"hidden", c.hidden}, {"layers", c.layers},
                            {"heads", c.heads}, {"mlp", c.mlp}}) {
    check_positive(r, key, value);
  }
  if (c.image_size % c.patch_size != 0) {
    r.fail("patch_size", std::to_string(c.patch_size) + " does not divide " + r.path_of("image_size") + " " +
                             std::to_string(c.image_size));
  }
  check_divides(r, "heads", c.heads, "hidden", c.hidden);
  if (c.eps <= 0) r.fail("eps", "must be > 0");
  for (int layer : c.feature_layers) {
    if (layer > c.layers || layer < -(c.layers + 1)) {
      std::ostringstream msg;
      msg << layer << " is out of range: hidden states run from " << -(c.layers + 1) << " to " << c.layers
          << " (0 = embeddings) for " << r.path_of("layers") << " " << c.layers;
      r.fail("feature_layers", msg.str());
    }
  }
  return c;
}

AbstractorConfig parse_abstractor(JsonReader r, AbstractorConfig c) {
  c.kind = r.get_choice("kind", c.kind, {"identity", "linear", "mlp"});
  if (c.kind == "mlp") {
    c.depth = r.get_int("depth", c.depth);
    c.act = r.get_choice("act", c.act, kActivations);
    if (c.depth < 1) r.fail("depth", std::to_string(c.depth) + " must be >= 1");
  } else {
    c.depth = 1;
  }
  if (c.kind != "identity") c.bias = r.get_bool("bias", c.bias);
  r.reject_unknown_keys();
  return c;
}

FusionConfig parse_fusion(JsonReader r, FusionConfig c) {
  c.kind = r.get_choice("kind", c.kind, {"splice"});
  c.image_token_id = r.get_int("image_token_id", c.image_token_id);
  r.reject_unknown_keys();
  return c;
}

LlmConfig parse_llm(JsonReader r, LlmConfig c) {
  c.kind = r.get_choice("kind", c.kind, {"llama"});
  c.vocab = r.get_int("vocab", c.vocab);
  c.hidden = r.get_int("hidden", c.hidden);
  c.layers = r.get_int("layers", c.layers);
  c.heads = r.get_int("heads", c.heads);
  c.kv_heads = r.get_int("kv_heads", r.has("heads") && !r.has("kv_heads") ? c.heads : c.kv_heads);
  bool explicit_head_dim = r.has("head_dim");
  c.head_dim = r.get_int("head_dim", 0);
  c.mlp = r.get_int("mlp", c.mlp);
  c.rope_theta = r.get_double("rope_theta", c.rope_theta);
  c.rms_eps = r.get_double("rms_eps", c.rms_eps);
  c.tie_embeddings = r.get_bool("tie_embeddings", c.tie_embeddings);
  c.max_positions = r.get_int("max_positions", c.max_positions);
  c.attention_bias = r.get_bool("attention_bias", c.attention_bias);
  c.mlp_bias = r.get_bool("mlp_bias", c.mlp_bias);
  c.act = r.get_choice("act", c.act, kActivations);
  c.bos_token_id = r.get_int("bos_token_id", c.bos_token_id);
  c.eos_token_id = r.get_int("eos_token_id", c.eos_token_id);
  c.pad_token_id = r.get_int("pad_token_id", c.pad_token_id);
  r.reject_unknown_keys();

  for (auto [key, value] : {std::pair<const char*, int>{"vocab", c.vocab}, {"hidden", c.hidden},
                            {"layers", c.layers}, {"heads", c.heads}, {"kv_heads", c.kv_heads},
                            {"mlp", c.mlp}, {"max_positions", c.max_positions}}) {
    check_positive(r, key, value);
  }
  if (!explicit_head_dim) {
    check_divides(r, "heads", c.heads, "hidden", c.hidden);
    c.head_dim = c.hidden / c.heads;
  }
  check_positive(r, "head_dim", c.head_dim);
  if (c.head_dim % 2 != 0) r.fail("head_dim", std::to_string(c.head_dim) + " must be even for rotary embeddings");
  check_divides(r, "kv_heads", c.kv_heads, "heads", c.heads);
  if (c.rope_theta <= 0) r.fail("rope_theta", "must be > 0");
  if (c.rms_eps <= 0) r.fail("rms_eps", "must be > 0");
  for (auto [key, value] : {std::pair<const char*, int>{"bos_token_id", c.bos_token_id},
                            {"eos_token_id", c.eos_token_id}, {"pad_token_id", c.pad_token_id}}) {
    if (value < 0 || value >= c.vocab) {
      r.fail(key, std::to_string(value) + " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
    }
  }
  return c;
}

}  // namespace

std::vector<int> VisionConfig::resolved_feature_layers() const {
  std::vector<int> out;
  for (int layer : feature_layers) out.push_back(layer < 0 ? layer + layers + 1 : layer);
  return out;
}

int ModelConfig::visual_tokens_per_image() const {
  if (vision.kind == "none") return 0;
  return vision.feature_tokens();
}

std::vector<std::string> family_names() { return {"llava"}; }

ModelConfig parse_model_config(const Json& json) {
  JsonReader root(json, "");
  ModelConfig c;
  c.family = root.get_choice("family", "llava", family_names());
  apply_family_defaults(c.family, c);
  c.name = root.get_string("name", "");
  c.fused = root.get_bool("fused", true);
  c.vision = parse_vision(root.child("vision"), c.vision);
  c.abstractor = parse_abstractor(root.child("abstractor"), c.abstractor);
  c.fusion = parse_fusion(root.child("fusion"), c.fusion);
  c.llm = parse_llm(root.child("llm"), c.llm);
  root.reject_unknown_keys();

  if (c.fusion.image_token_id < 0 || c.fusion.image_token_id >= c.llm.vocab) {
    throw ConfigError("fusion.image_token_id: " + std::to_string(c.fusion.image_token_id) +
                      " is outside the vocabulary [0, llm.vocab " + std::to_string(c.llm.vocab) + ")");
  }
  if (c.vision.kind == "none" && c.abstractor.kind != "identity") {
    // Without a vision encoder there are no features to abstract.
    throw ConfigError("abstractor.kind: \"" + c.abstractor.kind + "\" needs a vision encoder, but vision.kind is \"none\"");
  }
  if (c.abstractor.kind == "identity" && c.vision.kind != "none" && c.vision.feature_dim() != c.llm.hidden) {
    throw ConfigError("abstractor.kind: \"identity\" needs vision features as wide as llm.hidden " +
                      std::to_string(c.llm.hidden) + ", got " + std::to_string(c.vision.feature_dim()));
  }
  return c;
}

ModelConfig parse_model_config_string(const std::string& text) {
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw ConfigError(std::string("config is not valid JSON: ") + e.what());
  }
  return parse_model_config(json);
}

Json to_json(const ModelConfig& c) {
  Json vision;
  if (c.vision.kind == "none") {
    vision = {{"kind", "none"}};
  } else {
    const auto& v = c.vision;
    vision = {{"kind", v.kind},           {"style", v.style},           {"image_size", v.image_size},
              {"patch_size", v.patch_size}, {"channels", v.channels},   {"hidden", v.hidden},
              {"layers", v.layers},       {"heads", v.heads},           {"mlp", v.mlp},
              {"act", v.act},             {"eps", v.eps},               {"class_token", v.class_token},
              {"pre_norm", v.pre_norm},   {"post_norm", v.post_norm},   {"patch_bias", v.patch_bias},
              {"feature_layers", v.feature_layers}, {"select", v.select}};
  }
  Json abstractor = {{"kind", c.abstractor.kind}};
  if (c.abstractor.kind == "mlp") {
    abstractor["depth"] = c.abstractor.depth;
    abstractor["act"] = c.abstractor.act;
  }
  if (c.abstractor.kind != "identity") abstractor["bias"] = c.abstractor.bias;
  const auto& l = c.llm;
  Json llm = {{"kind", l.kind},
              {"vocab", l.vocab},
              {"hidden", l.hidden},
              {"layers", l.layers},
              {"heads", l.heads},
              {"kv_heads", l.kv_heads},
              {"head_dim", l.head_dim},
              {"mlp", l.mlp},
              {"rope_theta", l.rope_theta},
              {"rms_eps", l.rms_eps},
              {"tie_embeddings", l.tie_embeddings},
              {"max_positions", l.max_positions},
              {"attention_bias", l.attention_bias},
              {"mlp_bias", l.mlp_bias},
              {"act", l.act},
              {"bos_token_id", l.bos_token_id},
              {"eos_token_id", l.eos_token_id},
              {"pad_token_id", l.pad_token_id}};
  return {{"name", c.name},
          {"family", c.family},
          {"fused", c.fused},
          {"vision", vision},
          {"abstractor", abstractor},
          {"fusion", {{"kind", c.fusion.kind}, {"image_token_id", c.fusion.image_token_id}}},
          {"llm", llm}};
}

}  // namespace vlmzoo::config
