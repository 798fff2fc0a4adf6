#include "models/initialize.h"

#include <optional>

namespace vlmzoo::models {

void initialize_by_name(torch::nn::Module& module, double std, int64_t seed) {
  torch::NoGradGuard no_grad;
  std::optional<at::Generator> generator;
  if (seed >= 0) generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  for (auto& item : module.named_parameters()) {
    const std::string& name = item.key();
    auto& p = item.value();
    if (p.device().type() == torch::kMeta) continue;
    auto dot = name.rfind('.');
    auto owner = dot == std::string::npos ? std::string() : name.substr(0, dot);
    bool is_norm = owner.substr(owner.rfind('.') + 1).find("norm") != std::string::npos;
    const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
    bool is_bias = leaf.size() >= 4 && leaf.compare(leaf.size() - 4, 4, "bias") == 0;
    // Flamingo's tanh gates start at 0 (attn_gate, mlp_gate): an untrained block leaves its LM unchanged.
    bool is_gate = leaf.size() >= 5 && leaf.compare(leaf.size() - 5, 5, "_gate") == 0;
    if (is_gate) {
      p.zero_();
    } else if (is_norm) {
      p.fill_(is_bias ? 0.0 : 1.0);
    } else if (is_bias) {
      p.zero_();
    } else {
      p.copy_(torch::normal(0.0, std, p.sizes(), generator, torch::TensorOptions().dtype(torch::kFloat32)).to(p.options()));
    }
  }
}

}  // namespace vlmzoo::models
