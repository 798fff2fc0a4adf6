#pragma once
// Kinds by name, one registry per slot. A kind file registers itself with one line:
//
//   const bool mlp_registered = register_kind<Abstractor, MlpConfig>("mlp", mlp_schema(), build_mlp);
//
// Names in a kind file's anonymous namespace carry the kind (build_mlp, mlp_registered): the sanitizer
// build (scripts/sanitize.sh) compiles several source files as one (CMake's unity build).
//
// The entry is the only place a kind's parsing, serialising and building meet, so they cannot
// drift apart. A duplicate name is an error at load time.
#include "config/schema.h"
#include "models/slots.h"

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>

namespace vlmzoo::models {

using config::ConfigError;
using config::Json;
using config::JsonReader;

template <class Module>
struct SlotName;
template <> struct SlotName<VisionEncoder> { static constexpr const char* value = "vision"; };
template <> struct SlotName<Abstractor> { static constexpr const char* value = "abstractor"; };
template <> struct SlotName<Fusion> { static constexpr const char* value = "fusion"; };
template <> struct SlotName<LanguageModel> { static constexpr const char* value = "llm"; };
template <> struct SlotName<Head> { static constexpr const char* value = "head"; };

template <class Module>
struct KindEntry {
  std::function<std::shared_ptr<SlotConfig>(JsonReader&)> parse;
  std::function<void(const SlotConfig&, Json&)> write;
  // Returns null for kinds that hold no module (vision "none").
  std::function<std::shared_ptr<Module>(const SlotConfig&, const BuildContext&)> build;
};

template <class Module>
class Registry {
 public:
  static Registry& instance() {
    static Registry registry;
    return registry;
  }
  void add(const std::string& kind, KindEntry<Module> entry) {
    if (!entries_.emplace(kind, std::move(entry)).second) {
      throw std::logic_error(std::string("kind \"") + kind + "\" is registered twice for slot " + SlotName<Module>::value);
    }
  }
  const KindEntry<Module>* find(const std::string& kind) const {
    auto it = entries_.find(kind);
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> kinds() const {
    std::vector<std::string> names;
    for (const auto& item : entries_) names.push_back(item.first);
    return names;
  }

 private:
  std::map<std::string, KindEntry<Module>> entries_;
};

template <class Module, class Config, class Build>
bool register_kind(const std::string& kind, const config::Schema<Config>& schema, Build build) {
  static_assert(std::is_base_of_v<SlotConfig, Config>, "a kind's config derives from SlotConfig");
  Registry<Module>::instance().add(
      kind, KindEntry<Module>{
                [&schema, kind](JsonReader& r) {
                  auto c = std::make_shared<Config>();
                  c->kind = kind;
                  schema.parse(r, *c);
                  return std::static_pointer_cast<SlotConfig>(c);
                },
                [&schema](const SlotConfig& c, Json& j) {
                  j["kind"] = c.kind;
                  schema.write(static_cast<const Config&>(c), j);
                },
                [build](const SlotConfig& c, const BuildContext& context) -> std::shared_ptr<Module> {
                  return build(static_cast<const Config&>(c), context);
                }});
  return true;
}

// The registered kinds of a slot by its config name ("vision", "abstractor", ...).
std::vector<std::string> registered_kinds(const std::string& slot);
std::vector<std::string> slot_names();

}  // namespace vlmzoo::models
