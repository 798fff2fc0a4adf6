#include "models/multiway_encoder.h"

#include "models/initialize.h"
#include "nn/norms.h"

namespace vlmzoo::models {

namespace {

template <class Needed, class Module>
std::shared_ptr<Needed> build_as(const char* slot, const std::shared_ptr<const SlotConfig>& c,
                                 const BuildContext& context, const char* needed) {
  if (!c) throw ConfigError(std::string(slot) + ": the multiway_encoder assembly needs this slot");
  auto built = std::dynamic_pointer_cast<Needed>(Registry<Module>::instance().find(c->kind)->build(*c, context));
  if (!built) {
    throw ConfigError(std::string(slot) + ".kind: \"" + c->kind + "\" is not " + needed +
                      ", which the multiway_encoder assembly needs here");
  }
  return built;
}

}  // namespace

MultiwayEncoderImpl::MultiwayEncoderImpl(ModelConfig config, const torch::TensorOptions& options, bool initialize)
    : config_(std::move(config)), policy_(std::make_shared<nn::KernelPolicy>(nn::KernelPolicy{config_.fused})) {
  for (auto [slot, c] : {std::pair<const char*, const std::shared_ptr<const SlotConfig>*>{"abstractor", &config_.abstractor},
                         {"fusion", &config_.fusion}}) {
    if (*c) {
      throw ConfigError(std::string(slot) + ": the multiway_encoder assembly (family \"" + config_.family +
                        "\") has no " + slot + " slot; remove it");
    }
  }
  BuildContext context{policy_, options.dtype(options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32)};
  auto encoder = build_as<MultiwayTransformer, LanguageModel>("llm", config_.llm, context, "a multiway encoder");
  context.llm_hidden = encoder->hidden_size();
  context.llm_vocab = encoder->vocab_size();
  auto image = build_as<VisionEncoder, VisionEncoder>("vision", config_.vision, context, "a vision encoder");
  if (image->output_width() != encoder->hidden_size()) {
    throw ConfigError("vision.kind: \"" + config_.vision->kind + "\" gives " + std::to_string(image->output_width()) +
                      "-wide tokens; the multiway encoder takes " + std::to_string(encoder->hidden_size()));
  }
  vision = register_module("vision", image);
  llm = register_module("llm", encoder);
  head = register_module("head", build_as<EncoderHead, Head>("head", config_.head, context, "a multiway-encoder head"));
  if (initialize) initialize_weights();
}

void MultiwayEncoderImpl::initialize_weights(double std, int64_t seed) {
  initialize_by_name(*this, std, seed);
  // Multiway norms are named <norm>.A / <norm>.B (and inner_attn_ln): set every LayerNorm by type.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* norm = dynamic_cast<nn::LayerNormImpl*>(module.get())) {
      if (norm->weight.device().type() == torch::kMeta) continue;
      norm->weight.fill_(1.0);
      norm->bias.zero_();
    }
  }
  head->initialize_constants();
}

torch::Tensor MultiwayEncoderImpl::encode(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                                          const torch::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(input_ids.defined() || pixel_values.defined(),
                    "a multiway encoder needs input_ids, pixel_values or both");
  torch::Tensor image = pixel_values.defined() ? vision->forward(pixel_values) : torch::Tensor();  // [N, V, D]
  torch::Tensor text = input_ids.defined() ? llm->embed_text(input_ids) : torch::Tensor();          // [N, T, D]
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(input_ids.defined(), "attention_mask: masks text tokens, but no input_ids were given");
    TORCH_CHECK_VALUE(attention_mask.sizes() == input_ids.sizes(), "attention_mask: expected the shape of input_ids ",
                      input_ids.sizes(), ", got ", attention_mask.sizes());
  }
  if (image.defined() && text.defined()) {
    TORCH_CHECK_VALUE(image.size(0) == text.size(0), "pixel_values: ", image.size(0),
                      " images, but input_ids holds ", text.size(0),
                      " texts; a vision-language pass pairs image i with text i");
  }
  const int64_t split = image.defined() ? image.size(1) : 0;
  auto x = !text.defined() ? image : !image.defined() ? text : torch::cat({image, text}, 1);
  torch::Tensor allowed;
  if (attention_mask.defined()) {
    // Padding: embeddings zeroed (torchscale multiplies by 1 - padding) and masked as keys.
    auto real = attention_mask.to(torch::kBool);
    if (split > 0) real = torch::cat({torch::ones({real.size(0), split}, real.options()), real}, 1);
    x = x * real.unsqueeze(-1).to(x.scalar_type());
    allowed = real.view({real.size(0), 1, 1, real.size(1)});
  }
  return llm->encode(x, split, allowed, image.defined() && text.defined());
}

MultiwayOutputs MultiwayEncoderImpl::run(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                                             const torch::Tensor& attention_mask) {
  MultiwayOutputs out;
  const bool both = input_ids.defined() && pixel_values.defined();
  if (both && head->separate_passes()) {
    out.head = head->outputs(encode({}, pixel_values, {}), EncoderMode::kVision);
    for (auto& item : head->outputs(encode(input_ids, {}, attention_mask), EncoderMode::kText)) out.head.insert(item);
    head->pair(out.head);
    return out;
  }
  out.last_hidden_state = encode(input_ids, pixel_values, attention_mask);
  const auto mode = both ? EncoderMode::kVisionLanguage : input_ids.defined() ? EncoderMode::kText : EncoderMode::kVision;
  out.head = head->outputs(out.last_hidden_state, mode);
  return out;
}

std::map<std::string, double> MultiwayEncoderImpl::forward_flops(int64_t text_tokens, int64_t images) const {
  const int64_t tokens = vision->output_tokens() + text_tokens;
  std::map<std::string, double> flops = {{"vision", vision->flops(images)},
                                         {"llm", static_cast<double>(images) * llm->flops(tokens)},
                                         {"head", head->flops(images)}};
  double total = 0;
  for (const auto& item : flops) total += item.second;
  flops["total"] = total;
  return flops;
}

}  // namespace vlmzoo::models
