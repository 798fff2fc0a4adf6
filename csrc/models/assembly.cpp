#include "models/assembly.h"

#include "config/families.h"
#include "models/memory_check.h"


namespace vlmzoo::models {

std::string assembly_of(const ModelConfig& config) {
  const Json& family = config::family(config.family);
  if (!family.contains("assembly")) return "decoder";
  std::string name = family["assembly"].get<std::string>();
  if (name != "decoder" && name != "dual_encoder" && name != "multiway_encoder") {
    throw std::logic_error("configs/families/" + config.family + ".json: assembly \"" + name +
                           "\" is not one of \"decoder\", \"dual_encoder\", \"multiway_encoder\"");
  }
  return name;
}

void check_model(const ModelConfig& config) {
  const auto meta = torch::TensorOptions().device(torch::kMeta);
  const std::string assembly = assembly_of(config);
  if (assembly == "dual_encoder") {
    DualEncoder(config, meta, false);
  } else if (assembly == "multiway_encoder") {
    MultiwayEncoder(config, meta, false);
  } else {
    DecoderVlm(config, meta, false);
  }
}

DualEncoder build_dual_encoder(const ModelConfig& config, const torch::TensorOptions& options, bool initialize) {
  if (assembly_of(config) != "dual_encoder") {
    throw ConfigError("family: \"" + config.family + "\" builds a " + assembly_of(config) +
                      " assembly, not a dual encoder");
  }
  const bool meta = options.device_opt().has_value() && options.device().type() == torch::kMeta;
  if (!meta) {
    DualEncoder shapes(config, options.device(torch::kMeta), false);
    refuse_if_larger_than_memory(*shapes, options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32);
  }
  return DualEncoder(config, options, initialize);
}

MultiwayEncoder build_multiway_encoder(const ModelConfig& config, const torch::TensorOptions& options,
                                      bool initialize) {
  if (assembly_of(config) != "multiway_encoder") {
    throw ConfigError("family: \"" + config.family + "\" builds a " + assembly_of(config) +
                      " assembly, not a multiway encoder");
  }
  const bool meta = options.device_opt().has_value() && options.device().type() == torch::kMeta;
  if (!meta) {
    MultiwayEncoder shapes(config, options.device(torch::kMeta), false);
    refuse_if_larger_than_memory(*shapes, options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32);
  }
  return MultiwayEncoder(config, options, initialize);
}

}  // namespace vlmzoo::models
