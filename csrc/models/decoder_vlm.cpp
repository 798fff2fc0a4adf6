#include "models/decoder_vlm.h"

#include "models/initialize.h"
#include "models/memory_check.h"
#include "nn/masks.h"

#include <algorithm>
#include <optional>

namespace vlmzoo::models {

namespace {

template <class Module>
std::shared_ptr<Module> build_slot(const std::shared_ptr<const SlotConfig>& c, const BuildContext& context) {
  if (!c) throw ConfigError(std::string(SlotName<Module>::value) + ": the decoder assembly needs this slot");
  return Registry<Module>::instance().find(c->kind)->build(*c, context);
}

}  // namespace

DecoderVlmImpl::DecoderVlmImpl(ModelConfig config, const torch::TensorOptions& options, bool initialize)
    : config_(std::move(config)), policy_(std::make_shared<nn::KernelPolicy>(nn::KernelPolicy{config_.fused})) {
  BuildContext context{policy_, options.dtype(options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32)};
  // The LM first: its width and vocabulary are the other slots' targets.
  auto lm = build_slot<LanguageModel>(config_.llm, context);
  context.llm_hidden = lm->hidden_size();
  context.llm_vocab = lm->vocab_size();
  context.llm_layers = lm->num_layers();
  if (auto v = build_slot<VisionEncoder>(config_.vision, context)) {
    vision = register_module("vision", v);
    context.input_width = vision->output_width();
    context.input_tokens = vision->output_tokens();
  }
  auto a = build_slot<Abstractor>(config_.abstractor, context);
  if (vision) {
    abstractor = register_module("abstractor", a);
    context.visual_width = abstractor->output_width() > 0 ? abstractor->output_width() : context.llm_hidden;
    context.visual_tokens = abstractor->output_tokens();
  }
  fusion = register_module("fusion", build_slot<Fusion>(config_.fusion, context));
  llm = register_module("llm", lm);
  head = register_module("head", build_slot<Head>(config_.head, context));
  if (initialize) initialize_weights();  // skips meta parameters
}

void DecoderVlmImpl::initialize_weights(double std, int64_t seed) { initialize_by_name(*this, std, seed); }

torch::Tensor DecoderVlmImpl::encode_images(const torch::Tensor& pixel_values, const AbstractorText& text) {
  TORCH_CHECK_VALUE(vision, "pixel_values were given but this model has no vision encoder (vision.kind \"none\")");
  // The vision tower reads pixel_values first, so a malformed image batch is named as such, not as a
  // qformer_input_ids row count that disagrees with it. A frozen tower (no parameter that trains, pixels
  // without gradient) records no graph: nothing upstream of the abstractor can receive a gradient.
  const auto params = vision->parameters();
  const bool frozen = !pixel_values.requires_grad() && !overrides.vision && !overrides.python_in_vision &&
                      std::none_of(params.begin(), params.end(), [](const auto& p) { return p.requires_grad(); });
  std::optional<torch::NoGradGuard> no_grad;
  if (frozen) no_grad.emplace();
  const auto features = overrides.vision ? overrides.vision(pixel_values) : vision->forward(pixel_values);
  no_grad.reset();
  const auto& ids = text.input_ids;
  if (ids.defined()) {
    TORCH_CHECK_VALUE(abstractor->reads_text(), "qformer_input_ids: abstractor.kind \"", config_.abstractor->kind,
                      "\" reads no text");
    TORCH_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == pixel_values.size(0),
                      "qformer_input_ids: expected [num_images ", pixel_values.size(0), ", tokens], got ", ids.sizes());
    TORCH_CHECK_VALUE(!text.attention_mask.defined() || text.attention_mask.sizes() == ids.sizes(),
                      "qformer_attention_mask: expected the shape of qformer_input_ids ", ids.sizes(), ", got ",
                      text.attention_mask.sizes());
  }
  return overrides.abstractor ? overrides.abstractor(features, text) : abstractor->forward(features, text);
}

void DecoderVlmImpl::check_inputs(const VlmInputs& in) const {
  TORCH_CHECK_VALUE(in.input_ids.defined() && in.input_ids.dim() == 2, "input_ids: expected [batch, tokens], got ",
                    in.input_ids.defined() ? in.input_ids.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(!in.input_ids.is_floating_point() && !in.input_ids.is_complex() &&
                        in.input_ids.scalar_type() != torch::kBool,
                    "input_ids: dtype torch.", c10::getDtypeNames(in.input_ids.scalar_type()).first,
                    "; token ids must be integers (torch.long)");
  for (auto [name, t] : {std::pair<const char*, const torch::Tensor*>{"attention_mask", &in.attention_mask},
                         {"position_ids", &in.position_ids}}) {
    TORCH_CHECK_VALUE(!t->defined() || t->sizes() == in.input_ids.sizes(), name, ": expected the shape of input_ids ",
                      in.input_ids.sizes(), ", got ", t->sizes());
  }
  const auto& media = in.image_attention_mask;
  TORCH_CHECK_VALUE(!media.defined() || (media.dim() == 3 && media.size(0) == in.input_ids.size(0) &&
                                         media.size(1) == in.input_ids.size(1)),
                    "image_attention_mask: expected [batch ", in.input_ids.size(0), ", tokens ", in.input_ids.size(1),
                    ", images], got ", media.defined() ? media.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(!media.defined() || in.pixel_values.defined(), "image_attention_mask: given without pixel_values");
}

torch::Tensor DecoderVlmImpl::run_layers(torch::Tensor x, DecoderContext& ctx) {
  ctx.allowed = ctx.mask_mode == MaskMode::kCausal ? nn::causal_mask(x.size(1), ctx.past, ctx.attention_mask, x.device())
                                                  : nn::padding_mask(x.size(1), ctx.past, ctx.attention_mask, x.device());
  x = llm->begin(x, ctx);
  const bool overridden = !overrides.layers.empty();
  for (int64_t i = 0; i < llm->num_layers(); ++i) {
    x = fusion->before_layer(i, x, ctx);
    x = overridden && overrides.layers[i] ? overrides.layers[i](i, x, ctx) : llm->layer(i, x, ctx);
  }
  return llm->finish(x);
}

torch::Tensor DecoderVlmImpl::forward(const VlmInputs& in) {
  check_inputs(in);
  torch::Tensor visual;
  if (in.pixel_values.defined()) visual = encode_images(in.pixel_values, in.abstractor_text);
  auto fused = fusion->fuse(in.input_ids, in.attention_mask, in.position_ids, visual, *llm);
  DecoderContext ctx;
  ctx.attention_mask = fused.attention_mask;
  ctx.visual = visual;
  ctx.media_mask = fusion->media_mask(in.input_ids, in.image_attention_mask, visual);
  const int64_t batch = fused.embeds.size(0), tokens = fused.embeds.size(1);
  ctx.positions = fused.position_ids.defined()
                      ? fused.position_ids
                      : llm->default_positions(fused.attention_mask, batch, tokens, fused.embeds.device());
  auto hidden = run_layers(fused.embeds, ctx);
  if (fused.prefix > 0) hidden = hidden.narrow(1, fused.prefix, tokens - fused.prefix);
  return head->forward(hidden, *llm);
}

std::map<std::string, double> DecoderVlmImpl::forward_flops(int64_t text_tokens, int64_t images) const {
  std::map<std::string, double> flops = {{"vision", 0.0}, {"abstractor", 0.0}};
  int64_t visual = 0;
  if (vision) {
    flops["vision"] = vision->flops(images);
    flops["abstractor"] = abstractor->flops(images);
    visual = abstractor->output_tokens() * images;
  }
  const int64_t sequence = fusion->sequence_tokens(text_tokens, visual);
  flops["llm"] = llm->flops(sequence);
  if (double f = fusion->flops(sequence, images); f > 0) flops["fusion"] = f;
  double total = 0;
  for (const auto& item : flops) total += item.second;
  flops["total"] = total;
  return flops;
}

DecoderVlm build_model(const ModelConfig& config, const torch::TensorOptions& options, bool initialize) {
  const bool meta = options.device_opt().has_value() && options.device().type() == torch::kMeta;
  if (!meta) {
    DecoderVlm shapes(config, options.device(torch::kMeta), false);
    refuse_if_larger_than_memory(*shapes, options.has_dtype() ? options.dtype().toScalarType() : torch::kFloat32);
  }
  return DecoderVlm(config, options, initialize);
}

}  // namespace vlmzoo::models
