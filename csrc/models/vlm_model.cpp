#include "models/vlm_model.h"

namespace vlmzoo::models {

VlmModelImpl::VlmModelImpl(config::ModelConfig config)
    : config_(std::move(config)), policy_(std::make_shared<nn::KernelPolicy>(nn::KernelPolicy{config_.fused})) {
  const auto& c = config_;
  if (c.vision.kind == "vit") vision = register_module("vision", nn::VisionTransformer(c.vision, policy_));
  if (c.abstractor.kind != "identity") {
    abstractor = register_module("abstractor", nn::Projector(c.vision.feature_dim(), c.llm.hidden, c.abstractor, policy_));
  }
  llm = register_module("llm", nn::LlamaModel(c.llm, policy_));
  initialize_weights();
}

void VlmModelImpl::initialize_weights(double std, int64_t seed) {
  torch::NoGradGuard no_grad;
  std::optional<at::Generator> generator;
  if (seed >= 0) generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    auto& p = item.value();
    auto dot = name.rfind('.');
    auto owner = name.substr(0, dot);
    bool is_norm = owner.substr(owner.rfind('.') + 1).find("norm") != std::string::npos;
    bool is_bias = name.compare(dot + 1, std::string::npos, "bias") == 0;
    if (is_norm) {
      p.fill_(is_bias ? 0.0 : 1.0);
    } else if (is_bias) {
      p.zero_();
    } else {
      p.copy_(torch::normal(0.0, std, p.sizes(), generator, torch::TensorOptions().dtype(torch::kFloat32)).to(p.options()));
    }
  }
}

torch::Tensor VlmModelImpl::encode_images(const torch::Tensor& pixel_values) {
  TORCH_CHECK_VALUE(vision, "pixel_values were given but this model has no vision encoder (vision.kind \"none\")");
  auto features = vision(pixel_values);
  return abstractor ? abstractor(features) : features;
}

torch::Tensor VlmModelImpl::input_embeddings(const torch::Tensor& input_ids, const torch::Tensor& pixel_values) {
  TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids: expected [batch, tokens], got ", input_ids.sizes());
  auto embeds = llm->embed(input_ids);
  auto image_positions = input_ids == config_.fusion.image_token_id;  // [B, T]
  const int64_t placeholders = image_positions.sum().item<int64_t>();
  if (!pixel_values.defined()) {
    TORCH_CHECK_VALUE(placeholders == 0, "input_ids hold ", placeholders, " image tokens (fusion.image_token_id ",
                      config_.fusion.image_token_id, ") but no pixel_values were given");
    return embeds;
  }
  auto visual = encode_images(pixel_values);  // [N, tokens, hidden]
  TORCH_CHECK_VALUE(placeholders == visual.size(0) * visual.size(1), "input_ids hold ", placeholders,
                    " image tokens (fusion.image_token_id ", config_.fusion.image_token_id, ") but pixel_values give ",
                    visual.size(0), " images x ", visual.size(1), " visual tokens = ", visual.size(0) * visual.size(1));
  auto mask = image_positions.unsqueeze(-1).expand_as(embeds);
  return embeds.masked_scatter(mask, visual.to(embeds.scalar_type()));
}

torch::Tensor VlmModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                                    const torch::Tensor& attention_mask, const torch::Tensor& position_ids) {
  auto embeds = input_embeddings(input_ids, pixel_values);
  auto positions = position_ids;
  if (!positions.defined()) {
    positions = torch::arange(input_ids.size(1), input_ids.options().dtype(torch::kLong)).unsqueeze(0).expand_as(input_ids);
  }
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(attention_mask.sizes() == input_ids.sizes(), "attention_mask: expected the shape of input_ids ",
                      input_ids.sizes(), ", got ", attention_mask.sizes());
  }
  return llm->logits(llm(embeds, attention_mask, positions));
}

}  // namespace vlmzoo::models
