#pragma once
// Families are data: configs/families/<name>.json holds each family's slot defaults, its
// trainable-slot presets per training stage and the Hugging Face model types it loads. The build
// compiles those files in (families_data.cpp, generated), and the Python package reads the same files.
#include "config/json_reader.h"

namespace vlmzoo::config {

std::vector<std::string> family_names();
// The whole family file; throws ConfigError naming "family" and the known families when unknown.
const Json& family(const std::string& name);

}  // namespace vlmzoo::config
