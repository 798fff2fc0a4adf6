#include "models/assembly.h"

#include "config/families.h"

#include <unistd.h>

#include <iomanip>
#include <sstream>

namespace vlmzoo::models {

std::string assembly_of(const ModelConfig& config) {
  const Json& family = config::family(config.family);
  if (!family.contains("assembly")) return "decoder";
  std::string name = family["assembly"].get<std::string>();
  if (name != "decoder" && name != "dual_encoder") {
    throw std::logic_error("configs/families/" + config.family + ".json: assembly \"" + name +
                           "\" is not one of \"decoder\", \"dual_encoder\"");
  }
  return name;
}

void check_model(const ModelConfig& config) {
  const auto meta = torch::TensorOptions().device(torch::kMeta);
  if (assembly_of(config) == "dual_encoder") {
    DualEncoder(config, meta, false);
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
    int64_t count = 0;
    for (const auto& p : shapes->parameters()) count += p.numel();
    const auto dtype = options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32;
    const double bytes = static_cast<double>(count) * static_cast<double>(c10::elementSize(dtype));
    const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    if (memory > 0 && bytes > memory) {
      std::ostringstream msg;
      msg << std::fixed << std::setprecision(1) << "config: the model has " << count << " parameters, "
          << bytes / (1 << 30) << " GiB in " << c10::getDtypeNames(dtype).first << ", more than this machine's "
          << memory / (1 << 30) << " GiB of memory; inspect it with device=\"meta\", or build it in a smaller dtype";
      throw ConfigError(msg.str());
    }
  }
  return DualEncoder(config, options, initialize);
}

}  // namespace vlmzoo::models
