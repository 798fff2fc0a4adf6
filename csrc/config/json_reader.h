#pragma once
// Reads one JSON object at a known path ("llm", "vision") into typed fields. Every read names the
// key, so an error can say exactly which field of the user's config is wrong and why.
#include <nlohmann/json.hpp>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace vlmzoo::config {

using Json = nlohmann::json;

// Raised for any invalid config; the bindings surface it as Python ValueError.
struct ConfigError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The valid name closest to `given` (edit distance), or "" when none is close.
std::string closest_name(const std::string& given, const std::vector<std::string>& valid);

class JsonReader {
 public:
  // obj: the JSON object at `path` ("" for the root). A missing object reads as {}.
  JsonReader(const Json& obj, std::string path);

  std::string path_of(const std::string& key) const;
  bool has(const std::string& key) const;

  int get_int(const std::string& key, int fallback);
  int require_int(const std::string& key);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  // One of `choices`; a wrong value lists the choices.
  std::string get_choice(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices);
  // An int or a list of ints.
  std::vector<int> get_int_list(const std::string& key, const std::vector<int>& fallback);
  // The raw JSON value at `key` (null when absent), marked as read.
  const Json& raw(const std::string& key);
  // A child object, or {} when absent.
  JsonReader child(const std::string& key);

  // Raises on any key of the object that no get_/require_/child call asked for, suggesting the
  // closest valid key. Call once all fields are read.
  void reject_unknown_keys() const;

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  const Json& at(const std::string& key);
  Json obj_;
  std::string path_;
  std::set<std::string> known_;
};

}  // namespace vlmzoo::config
