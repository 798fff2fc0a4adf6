#include "models/dual_encoder.h"

#include "models/initialize.h"

namespace vlmzoo::models {

namespace {

// The slot's kind built, as the interface this assembly needs; another interface is a ConfigError
// naming the slot and the kind.
template <class Needed, class Module>
std::shared_ptr<Needed> build_as(const char* slot, const std::shared_ptr<const SlotConfig>& c,
                                 const BuildContext& context, const char* needed) {
  if (!c) throw ConfigError(std::string(slot) + ": the dual_encoder assembly needs this slot");
  auto built = std::dynamic_pointer_cast<Needed>(Registry<Module>::instance().find(c->kind)->build(*c, context));
  if (!built) {
    throw ConfigError(std::string(slot) + ".kind: \"" + c->kind + "\" is not " + needed +
                      ", which the dual_encoder assembly needs here");
  }
  return built;
}

}  // namespace

DualEncoderImpl::DualEncoderImpl(ModelConfig config, const torch::TensorOptions& options, bool initialize)
    : config_(std::move(config)), policy_(std::make_shared<nn::KernelPolicy>(nn::KernelPolicy{config_.fused})) {
  for (auto [slot, c] : {std::pair<const char*, const std::shared_ptr<const SlotConfig>*>{"abstractor", &config_.abstractor},
                         {"fusion", &config_.fusion}}) {
    if (*c) {
      throw ConfigError(std::string(slot) + ": the dual_encoder assembly (family \"" + config_.family +
                        "\") has no " + slot + " slot; remove it");
    }
  }
  BuildContext context{policy_, options.dtype(options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32)};
  auto text = build_as<TextEncoder, LanguageModel>("llm", config_.llm, context, "a text encoder");
  auto image = build_as<VisionEncoder, VisionEncoder>("vision", config_.vision, context, "a vision encoder");
  if (image->output_tokens() != 1) {
    throw ConfigError("vision.pool: the dual_encoder assembly needs one pooled vector per image (pool \"class\" or "
                      "\"map\"), the vision tower gives " + std::to_string(image->output_tokens()) + " tokens");
  }
  context.input_width = image->output_width();
  context.input_tokens = 1;
  context.llm_hidden = text->output_width();
  context.llm_vocab = text->vocab_size();
  vision = register_module("vision", image);
  llm = register_module("llm", text);
  head = register_module("head", build_as<SimilarityHead, Head>("head", config_.head, context, "an image-text head"));
  if (initialize) initialize_weights();
}

void DualEncoderImpl::initialize_weights(double std, int64_t seed) {
  initialize_by_name(*this, std, seed);
  head->initialize_constants();
}

torch::Tensor DualEncoderImpl::encode_images(const torch::Tensor& pixel_values, bool normalize) {
  auto pooled = vision->forward(pixel_values).select(1, 0);
  return normalize ? head->embed_images(pooled) : head->project_images(pooled);
}

torch::Tensor DualEncoderImpl::encode_texts(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                            bool normalize) {
  auto pooled = llm->encode(input_ids, attention_mask);
  return normalize ? head->embed_texts(pooled) : head->project_texts(pooled);
}

DualOutputs DualEncoderImpl::score(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                                     const torch::Tensor& attention_mask) {
  TORCH_CHECK_VALUE(input_ids.defined() && pixel_values.defined(),
                    "a dual encoder scores images against texts: pass both input_ids and pixel_values "
                    "(or call encode_images / encode_texts for one side)");
  DualOutputs out;
  out.image_embeds = encode_images(pixel_values);
  out.text_embeds = encode_texts(input_ids, attention_mask);
  out.logits_per_text = head->logits_per_text(out.text_embeds, out.image_embeds);
  out.logits_per_image = out.logits_per_text.t();
  return out;
}

std::map<std::string, double> DualEncoderImpl::forward_flops(int64_t text_tokens, int64_t images, int64_t texts) const {
  std::map<std::string, double> flops = {{"vision", vision->flops(images)},
                                         {"llm", static_cast<double>(texts) * llm->flops(text_tokens)},
                                         {"head", head->flops(texts, images)}};
  double total = 0;
  for (const auto& item : flops) total += item.second;
  flops["total"] = total;
  return flops;
}

}  // namespace vlmzoo::models
