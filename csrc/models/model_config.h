#pragma once
// A model's config: its family, and one typed config per slot, each parsed by its kind's
// registry entry after the family's slot defaults are merged under the user's fields.
#include "models/registry.h"

namespace vlmzoo::models {

struct ModelConfig {
  std::string name;
  std::string family = "llava";
  bool fused = true;  // fused kernels (csrc/ops) or the plain ATen references
  std::shared_ptr<const SlotConfig> vision, abstractor, fusion, llm, head;

  // The slot's config as its kind's type; a wrong kind is a logic error.
  template <class T>
  static const T& as(const std::shared_ptr<const SlotConfig>& slot) {
    auto typed = std::dynamic_pointer_cast<const T>(slot);
    if (!typed) throw std::logic_error("slot config of kind \"" + (slot ? slot->kind : std::string("?")) + "\" has another type");
    return *typed;
  }
};

// Parses and validates; throws ConfigError naming the JSON path of the first problem. A slot the
// user gives with the family's kind (or no kind) merges over the family's defaults; a slot of
// another kind replaces them.
ModelConfig parse_model_config(const Json& json);
ModelConfig parse_model_config_string(const std::string& text);
// The resolved config: every field explicit, so parse(to_json(c)) == c.
Json to_json(const ModelConfig& config);

}  // namespace vlmzoo::models
