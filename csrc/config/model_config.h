#pragma once
// Typed, validated configs for the four slots of a VLM. Every default and every check lives here;
// blocks and models never read raw JSON.
#include "config/json_reader.h"

#include <string>
#include <vector>

namespace vlmzoo::config {

struct VisionConfig {
  std::string kind = "vit";    // vit | none
  std::string style = "clip";  // clip (class token, pre-LN) | siglip (no class token, post-LN on all tokens)
  int image_size = 336;
  int patch_size = 14;
  int channels = 3;
  int hidden = 1024;
  int layers = 24;
  int heads = 16;
  int mlp = 4096;
  std::string act = "quick_gelu";
  double eps = 1e-5;
  bool class_token = true;
  bool pre_norm = true;
  bool post_norm = true;     // the parameter exists (checkpoints hold it); applied only for siglip
  bool patch_bias = false;
  std::vector<int> feature_layers = {-2};  // indices into hidden states: 0 = embeddings, i = layer i
  // "default" drops the first token (the class token; transformers drops it even without one),
  // "full" keeps every token.
  std::string select = "default";

  int patches_per_image() const { return (image_size / patch_size) * (image_size / patch_size); }
  int tokens_per_image() const { return patches_per_image() + (class_token ? 1 : 0); }
  // Features handed to the abstractor per image, and their width.
  int feature_tokens() const { return tokens_per_image() - (select == "default" ? 1 : 0); }
  int feature_dim() const { return hidden * static_cast<int>(feature_layers.size()); }
  // Feature layer indices resolved to [0, layers].
  std::vector<int> resolved_feature_layers() const;
};

struct AbstractorConfig {
  std::string kind = "mlp";  // linear | mlp | identity
  int depth = 2;             // number of linears for mlp
  std::string act = "gelu";
  bool bias = true;
};

struct FusionConfig {
  std::string kind = "splice";
  int image_token_id = 32000;
};

struct LlmConfig {
  std::string kind = "llama";
  int vocab = 32064;
  int hidden = 4096;
  int layers = 32;
  int heads = 32;
  int kv_heads = 32;
  int head_dim = 128;  // hidden / heads unless given
  int mlp = 11008;
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tie_embeddings = false;
  int max_positions = 4096;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::string act = "silu";
  int bos_token_id = 1;
  int eos_token_id = 2;
  int pad_token_id = 0;
};

struct ModelConfig {
  std::string name = "";
  std::string family = "llava";
  bool fused = true;  // fused kernels (csrc/ops) or the plain ATen reference
  VisionConfig vision;
  AbstractorConfig abstractor;
  FusionConfig fusion;
  LlmConfig llm;

  // Visual tokens one image contributes to the language model.
  int visual_tokens_per_image() const;
};

// Parses and validates; throws ConfigError naming the JSON path of the first problem.
ModelConfig parse_model_config(const Json& json);
ModelConfig parse_model_config_string(const std::string& text);
// The resolved config: every field explicit, so parse(to_json(c)) == c.
Json to_json(const ModelConfig& config);

std::vector<std::string> family_names();

}  // namespace vlmzoo::config
