#pragma once
// A kind's config fields, described once: that one description parses JSON (with the JSON path in
// every error), checks ranges, and writes the resolved config back (parse(to_json(c)) == c).
//
//   static const Schema<MlpConfig> schema = Schema<MlpConfig>()
//       .integer("depth", &MlpConfig::depth, kLayerCount)
//       .choice("act", &MlpConfig::act, activation_names());
#include "config/json_reader.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace vlmzoo::config {

// Inclusive bounds of an integer field. The upper bounds refuse absurd sizes before anything is
// allocated (a width of 2^30 would ask for exabytes of weights).
struct IntRange {
  int64_t min;
  int64_t max;
  bool positive_wording = true;  // below a minimum of 1: "must be a positive integer" (else "must be >= 1")
};
inline constexpr IntRange kWidth{1, 1 << 20};        // hidden sizes, MLP widths, vocabularies
inline constexpr IntRange kCount{1, 4096};           // layers, heads, queries
inline constexpr IntRange kNonNegativeCount{0, 4096};
inline constexpr IntRange kImageSize{1, 16384};
inline constexpr IntRange kTokenId{0, std::numeric_limits<int>::max()};

std::vector<std::string> activation_names();

// Fails at `key` unless `divisor` (the value of key) divides `dividend` (the value of other_key):
// "vision.heads: 5 does not divide vision.hidden 128".
inline void require_divides(JsonReader& r, const std::string& key, int divisor, const std::string& other_key,
                            int dividend) {
  if (divisor != 0 && dividend % divisor == 0) return;
  r.fail(key, std::to_string(divisor) + " does not divide " + r.path_of(other_key) + " " + std::to_string(dividend));
}

// Each named token id (bos, eos, pad...) must index the vocabulary: `ids` pairs a field's key with its value.
inline void require_token_ids_in_vocab(JsonReader& r, int vocab,
                                       std::initializer_list<std::pair<const char*, int>> ids) {
  for (auto [key, value] : ids) {
    if (value >= vocab) r.fail(key, std::to_string(value) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
}

template <class T>
class Schema {
 public:
  using Hook = std::function<void(JsonReader&, T&)>;

  Schema& integer(std::string key, int T::*field, IntRange range) {
    fields_.push_back({key,
                       [=](JsonReader& r, T& c) {
                         int value = r.get_int(key, c.*field);
                         std::ostringstream msg;
                         if (value < range.min && range.min == 1 && range.positive_wording) {
                           msg << value << " must be a positive integer";
                         } else if (value < range.min) {
                           msg << value << " must be >= " << range.min;
                         } else if (value > range.max) {
                           msg << value << " is larger than " << range.max << ", the most this field allows";
                         }
                         if (!msg.str().empty()) r.fail(key, msg.str());
                         c.*field = value;
                       },
                       [=](const T& c, Json& j) { j[key] = c.*field; }});
    return *this;
  }
  // A float field; `positive` refuses values <= 0 (epsilons, rope theta).
  Schema& number(std::string key, double T::*field, bool positive = true) {
    fields_.push_back({key,
                       [=](JsonReader& r, T& c) {
                         double value = r.get_double(key, c.*field);
                         if (!(value == value) || value == std::numeric_limits<double>::infinity() ||
                             value == -std::numeric_limits<double>::infinity()) {
                           r.fail(key, "must be a finite number");
                         }
                         if (positive && value <= 0) r.fail(key, "must be > 0");
                         c.*field = value;
                       },
                       [=](const T& c, Json& j) { j[key] = c.*field; }});
    return *this;
  }
  Schema& boolean(std::string key, bool T::*field) {
    fields_.push_back({key, [=](JsonReader& r, T& c) { c.*field = r.get_bool(key, c.*field); },
                       [=](const T& c, Json& j) { j[key] = c.*field; }});
    return *this;
  }
  Schema& choice(std::string key, std::string T::*field, std::vector<std::string> choices) {
    fields_.push_back({key, [=](JsonReader& r, T& c) { c.*field = r.get_choice(key, c.*field, choices); },
                       [=](const T& c, Json& j) { j[key] = c.*field; }});
    return *this;
  }
  // An int or a list of ints; every item within `range`.
  Schema& int_list(std::string key, std::vector<int> T::*field, IntRange range) {
    fields_.push_back({key,
                       [=](JsonReader& r, T& c) {
                         auto values = r.get_int_list(key, c.*field);
                         if (values.size() > 64) r.fail(key, "holds more than 64 entries");
                         for (int v : values) {
                           if (v < range.min || v > range.max) {
                             std::ostringstream msg;
                             msg << v << " is out of range [" << range.min << ", " << range.max << "]";
                             r.fail(key, msg.str());
                           }
                         }
                         c.*field = values;
                       },
                       [=](const T& c, Json& j) { j[key] = c.*field; }});
    return *this;
  }
  // Runs before the fields are read (e.g. a style that changes other fields' defaults).
  Schema& before(Hook hook) {
    before_.push_back(std::move(hook));
    return *this;
  }
  // Runs after the fields are read: derived defaults and checks that involve several fields.
  Schema& after(Hook hook) {
    after_.push_back(std::move(hook));
    return *this;
  }

  // Reads every described field of `r` into `c` (absent fields keep c's values), then rejects
  // any key the description does not name ("kind" is the registry's).
  void parse(JsonReader& r, T& c) const {
    r.get_string("kind", "");
    for (const auto& hook : before_) hook(r, c);
    for (const auto& f : fields_) f.read(r, c);
    for (const auto& hook : after_) hook(r, c);
    r.reject_unknown_keys();
  }
  void write(const T& c, Json& j) const {
    for (const auto& f : fields_) f.write(c, j);
  }

 private:
  struct Field {
    std::string key;
    std::function<void(JsonReader&, T&)> read;
    std::function<void(const T&, Json&)> write;
  };
  std::vector<Field> fields_;
  std::vector<Hook> before_, after_;
};

}  // namespace vlmzoo::config
