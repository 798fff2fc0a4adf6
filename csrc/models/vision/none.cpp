// vision kind "none": no vision encoder (a text-only decoder, or Fuyu-style models whose patches
// enter the LM directly). Builds no module; pixel_values given to such a model are an error.
#include "models/registry.h"

namespace vlmzoo::models {
namespace {

struct NoVisionConfig : SlotConfig {};

const config::Schema<NoVisionConfig>& none_schema() {
  static const config::Schema<NoVisionConfig> schema;
  return schema;
}

const bool none_registered = register_kind<VisionEncoder, NoVisionConfig>(
    "none", none_schema(), [](const NoVisionConfig&, const BuildContext&) { return std::shared_ptr<VisionEncoder>(); });

}  // namespace
}  // namespace vlmzoo::models
