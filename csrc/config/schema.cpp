#include "config/schema.h"

namespace vlmzoo::config {

std::vector<std::string> activation_names() { return {"gelu", "gelu_tanh", "quick_gelu", "relu", "relu2", "silu"}; }

}  // namespace vlmzoo::config
