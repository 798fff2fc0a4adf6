#include "models/model_config.h"

#include "config/families.h"

#include <sstream>

namespace vlmzoo::models {

namespace {

template <class Module>
std::shared_ptr<const SlotConfig> parse_slot(JsonReader& root, const Json& family_slots) {
  const std::string slot = SlotName<Module>::value;
  // A slot that neither the family nor the user names is absent (a dual encoder has no abstractor
  // or fusion); the assembly decides whether it may be.
  if (!family_slots.contains(slot) && !root.has(slot)) return nullptr;
  JsonReader user = root.child(slot);  // validates that the slot is an object
  Json merged = family_slots.contains(slot) ? family_slots[slot] : Json::object();
  const Json& given = root.has(slot) ? Json(root.raw(slot)) : Json::object();
  if (given.contains("kind") && merged.contains("kind") && given["kind"] != merged["kind"]) {
    merged = given;  // another kind: the family's fields may not apply to it
  } else {
    for (const auto& item : given.items()) merged[item.key()] = item.value();
  }
  JsonReader reader(merged, slot);
  std::string kind = reader.get_string("kind", "");
  const auto& registry = Registry<Module>::instance();
  const auto* entry = registry.find(kind);
  if (!entry) {
    std::ostringstream msg;
    msg << (kind.empty() ? std::string("is required;") : "\"" + kind + "\" is not one of") << " the registered "
        << slot << " kinds";
    for (const auto& k : registry.kinds()) msg << " \"" << k << "\"";
    std::string hint = config::closest_name(kind, registry.kinds());
    if (!hint.empty()) msg << " (did you mean \"" << hint << "\"?)";
    reader.fail("kind", msg.str());
  }
  return entry->parse(reader);
}

template <class Module>
Json slot_json(const std::shared_ptr<const SlotConfig>& c) {
  Json j = Json::object();
  Registry<Module>::instance().find(c->kind)->write(*c, j);
  return j;
}

}  // namespace

ModelConfig parse_model_config(const Json& json) {
  JsonReader root(json, "");
  ModelConfig c;
  c.family = root.get_string("family", "llava");
  const Json& family = config::family(c.family);
  c.name = root.get_string("name", "");
  c.fused = root.get_bool("fused", true);
  const Json& slots = family["slots"];
  c.vision = parse_slot<VisionEncoder>(root, slots);
  c.abstractor = parse_slot<Abstractor>(root, slots);
  c.fusion = parse_slot<Fusion>(root, slots);
  c.llm = parse_slot<LanguageModel>(root, slots);
  c.head = parse_slot<Head>(root, slots);
  root.reject_unknown_keys();
  return c;
}

ModelConfig parse_model_config_string(const std::string& text) {
  Json json;
  try {
    json = Json::parse(text);
  } catch (const Json::exception& e) {
    throw ConfigError(std::string("config is not valid JSON: ") + e.what());
  }
  return parse_model_config(json);
}

Json to_json(const ModelConfig& c) {
  Json j = {{"name", c.name}, {"family", c.family}, {"fused", c.fused}};
  if (c.vision) j["vision"] = slot_json<VisionEncoder>(c.vision);
  if (c.abstractor) j["abstractor"] = slot_json<Abstractor>(c.abstractor);
  if (c.fusion) j["fusion"] = slot_json<Fusion>(c.fusion);
  if (c.llm) j["llm"] = slot_json<LanguageModel>(c.llm);
  if (c.head) j["head"] = slot_json<Head>(c.head);
  return j;
}

std::vector<std::string> registered_kinds(const std::string& slot) {
  if (slot == "vision") return Registry<VisionEncoder>::instance().kinds();
  if (slot == "abstractor") return Registry<Abstractor>::instance().kinds();
  if (slot == "fusion") return Registry<Fusion>::instance().kinds();
  if (slot == "llm") return Registry<LanguageModel>::instance().kinds();
  if (slot == "head") return Registry<Head>::instance().kinds();
  throw ConfigError("unknown slot \"" + slot + "\"; slots are vision, abstractor, fusion, llm, head");
}

std::vector<std::string> slot_names() { return {"vision", "abstractor", "fusion", "llm", "head"}; }

}  // namespace vlmzoo::models
