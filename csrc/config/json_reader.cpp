#include "config/json_reader.h"

#include <algorithm>
#include <limits>
#include <sstream>

namespace vlmzoo::config {

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string type_name(const Json& v) { return v.type_name(); }
}  // namespace

std::string closest_name(const std::string& given, const std::vector<std::string>& valid) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, given.size() / 3) + 1;
  for (const auto& name : valid) {
    size_t d = edit_distance(given, name);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
  }
  return best;
}

JsonReader::JsonReader(const Json& obj, std::string path) : obj_(obj), path_(std::move(path)) {
  if (obj_.is_null()) obj_ = Json::object();
  if (!obj_.is_object()) {
    throw ConfigError((path_.empty() ? std::string("config") : path_) + ": expected an object, got " +
                      type_name(obj_));
  }
}

std::string JsonReader::path_of(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

bool JsonReader::has(const std::string& key) const { return obj_.contains(key) && !obj_[key].is_null(); }

void JsonReader::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(path_of(key) + ": " + message);
}

const Json& JsonReader::at(const std::string& key) {
  known_.insert(key);
  return obj_[key];
}

int JsonReader::get_int(const std::string& key, int fallback) {
  known_.insert(key);
  if (!has(key)) return fallback;
  const Json& v = at(key);
  // Values past int's range are refused here, never wrapped around.
  constexpr double kLow = std::numeric_limits<int>::min(), kHigh = std::numeric_limits<int>::max();
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(kHigh)) fail(key, v.dump() + " is too large");
  if (v.is_number_integer()) {
    int64_t value = v.get<int64_t>();
    if (value < kLow || value > kHigh) fail(key, v.dump() + " is too large");
    return static_cast<int>(value);
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d >= kLow && d <= kHigh && d == static_cast<double>(static_cast<int>(d))) return static_cast<int>(d);
  }
  fail(key, v.dump() + " is not an integer");
}

int JsonReader::require_int(const std::string& key) {
  known_.insert(key);
  if (!has(key)) fail(key, "is required");
  return get_int(key, 0);
}

double JsonReader::get_double(const std::string& key, double fallback) {
  known_.insert(key);
  if (!has(key)) return fallback;
  const Json& v = at(key);
  if (!v.is_number()) fail(key, v.dump() + " is not a number");
  return v.get<double>();
}

bool JsonReader::get_bool(const std::string& key, bool fallback) {
  known_.insert(key);
  if (!has(key)) return fallback;
  const Json& v = at(key);
  if (!v.is_boolean()) fail(key, v.dump() + " is not true or false");
  return v.get<bool>();
}

std::string JsonReader::get_string(const std::string& key, const std::string& fallback) {
  known_.insert(key);
  if (!has(key)) return fallback;
  const Json& v = at(key);
  if (!v.is_string()) fail(key, v.dump() + " is not a string");
  return v.get<std::string>();
}

std::string JsonReader::get_choice(const std::string& key, const std::string& fallback,
                                   const std::vector<std::string>& choices) {
  std::string value = get_string(key, fallback);
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return value;
  std::ostringstream msg;
  msg << "\"" << value << "\" is not one of";
  for (const auto& c : choices) msg << " \"" << c << "\"";
  std::string hint = closest_name(value, choices);
  if (!hint.empty()) msg << " (did you mean \"" << hint << "\"?)";
  fail(key, msg.str());
}

std::vector<int> JsonReader::get_int_list(const std::string& key, const std::vector<int>& fallback) {
  known_.insert(key);
  if (!has(key)) return fallback;
  const Json& v = at(key);
  if (v.is_number()) return {get_int(key, 0)};
  if (!v.is_array() || v.empty()) fail(key, v.dump() + " is not an integer or a non-empty list of integers");
  std::vector<int> out;
  for (const auto& item : v) {
    if (!item.is_number_integer() || item.get<int64_t>() < std::numeric_limits<int>::min() ||
        item.get<int64_t>() > std::numeric_limits<int>::max() ||
        (item.is_number_unsigned() && item.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max()))) {
      fail(key, v.dump() + " holds " + item.dump() + ", not an integer");
    }
    out.push_back(item.get<int>());
  }
  return out;
}

const Json& JsonReader::raw(const std::string& key) {
  static const Json null_value;
  known_.insert(key);
  return has(key) ? obj_[key] : null_value;
}

JsonReader JsonReader::child(const std::string& key) {
  known_.insert(key);
  return JsonReader(has(key) ? obj_[key] : Json::object(), path_of(key));
}

void JsonReader::reject_unknown_keys() const {
  std::vector<std::string> valid(known_.begin(), known_.end());
  for (const auto& item : obj_.items()) {
    if (known_.count(item.key())) continue;
    std::string msg = "unknown key";
    std::string hint = closest_name(item.key(), valid);
    if (!hint.empty()) msg += " (did you mean \"" + path_of(hint) + "\"?)";
    fail(item.key(), msg);
  }
}

}  // namespace vlmzoo::config
