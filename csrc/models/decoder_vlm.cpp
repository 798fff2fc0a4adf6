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

// Holds what a checkpointed block needs to run again in backward: the call with its context.
struct LayerRun : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> run;
  std::vector<torch::Tensor> params;  // the block's parameters that train
  bool input_grad = false;            // whether the block's input needs a gradient
};

// Gradient checkpointing of one block (torch.utils.checkpoint's recomputation): forward runs it without a
// graph and keeps only its input; backward runs it again with a graph and differentiates that.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  // x: the block's input; params: its trainable parameters, so their gradients flow through this node.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const c10::intrusive_ptr<LayerRun>& layer, const at::TensorList&) {
    ctx->save_for_backward({x});
    ctx->saved_data["layer"] = c10::IValue::make_capsule(layer);
    return layer->run(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto layer = c10::static_intrusive_pointer_cast<LayerRun>(ctx->saved_data["layer"].toCapsule());
    torch::autograd::variable_list out(2 + layer->params.size());
    if (!grads[0].defined()) return out;
    torch::AutoGradMode enable(true);
    auto x = ctx->get_saved_variables()[0].detach();
    if (layer->input_grad) x.requires_grad_(true);
    auto y = layer->run(x);
    torch::autograd::variable_list inputs;
    if (layer->input_grad) inputs.push_back(x);
    inputs.insert(inputs.end(), layer->params.begin(), layer->params.end());
    auto g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
    const size_t first = layer->input_grad ? 1 : 0;
    if (layer->input_grad) out[0] = g[0];
    for (size_t i = 0; i < layer->params.size(); ++i) out[2 + i] = g[first + i];
    return out;
  }
};

// run(x), checkpointed when something in it trains: `block`'s parameters or x itself.
torch::Tensor checkpointed(const torch::nn::Module& block, std::function<torch::Tensor(const torch::Tensor&)> run,
                           const torch::Tensor& x) {
  auto layer = c10::make_intrusive<LayerRun>();
  for (const auto& p : block.parameters()) {
    if (p.requires_grad()) layer->params.push_back(p);
  }
  layer->input_grad = x.requires_grad();
  if (!layer->input_grad && layer->params.empty()) return run(x);
  layer->run = std::move(run);
  return CheckpointedLayer::apply(x, layer, at::TensorList(layer->params));
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

torch::Tensor DecoderVlmImpl::encode_images(const torch::Tensor& images, const AbstractorText& given,
                                           std::vector<torch::Tensor>* vision_hidden_states) {
  TORCH_CHECK_VALUE(vision, "pixel_values were given but this model has no vision encoder (vision.kind \"none\")");
  // [batch, images, (frames,) C, H, W] (IDEFICS, OpenFlamingo's vision_x) -> [images, C, H, W]; the abstractor
  // learns where each image sits (media-time and frame embeddings).
  AbstractorText text = given;
  auto pixel_values = images;
  if (images.dim() == 5 || images.dim() == 6) {
    text.images_per_row = images.size(1);
    text.frames = images.dim() == 6 ? images.size(2) : 1;
    pixel_values = images.flatten(0, images.dim() - 4);
  }
  const int64_t media = pixel_values.size(0) / std::max<int64_t>(text.frames, 1);
  // The vision tower reads pixel_values first, so a malformed image batch is named as such, not as a
  // qformer_input_ids row count that disagrees with it. A frozen tower (no parameter that trains, pixels
  // without gradient) records no graph: nothing upstream of the abstractor can receive a gradient.
  const auto params = vision->parameters();
  const bool frozen = !pixel_values.requires_grad() && !overrides.vision && !overrides.python_in_vision &&
                      std::none_of(params.begin(), params.end(), [](const auto& p) { return p.requires_grad(); });
  std::optional<torch::NoGradGuard> no_grad;
  if (frozen) no_grad.emplace();
  torch::Tensor features;
  if (overrides.vision) {  // a Python hook or replacement on the vision view
    features = overrides.vision(pixel_values);
  } else if (vision_hidden_states) {
    features = vision->forward_hidden_states(pixel_values, *vision_hidden_states);
  } else if (!frozen && checkpointing()) {  // the tower as one checkpointed block: only the pixels are kept
    features = checkpointed(*vision, [tower = vision](const torch::Tensor& px) { return tower->forward(px); },
                            pixel_values);
  } else {
    features = vision->forward(pixel_values);
  }
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
  auto visual = overrides.abstractor ? overrides.abstractor(features, text) : abstractor->forward(features, text);
  TORCH_CHECK_VALUE(text.frames == 1 || visual.size(0) == media, "pixel_values: ", text.frames,
                    " frames per image (shape ", images.sizes(), "), but abstractor.kind \"", config_.abstractor->kind,
                    "\" reads one frame per image; only \"perceiver\" merges frames");
  return visual;
}

void DecoderVlmImpl::check_inputs(const VlmInputs& in) const {
  TORCH_CHECK_VALUE(in.input_ids.defined() != in.inputs_embeds.defined(),
                    "input_ids, inputs_embeds: give exactly one of them (got ", in.input_ids.defined() ? "both" : "neither", ")");
  if (in.inputs_embeds.defined()) {
    const auto& e = in.inputs_embeds;
    TORCH_CHECK_VALUE(e.dim() == 3 && e.size(2) == llm->hidden_size() && e.is_floating_point(),
                      "inputs_embeds: expected floating [batch, tokens, llm hidden ", llm->hidden_size(), "], got ",
                      e.sizes(), " ", e.scalar_type());
    // The rest checks the [batch, tokens] shape the embeddings stand for.
    VlmInputs shaped = in;
    shaped.input_ids = torch::zeros({e.size(0), e.size(1)}, e.options().dtype(torch::kLong).device(torch::kMeta));
    shaped.inputs_embeds = torch::Tensor();
    return check_inputs(shaped);
  }
  TORCH_CHECK_VALUE(in.input_ids.dim() == 2, "input_ids: expected [batch, tokens], got ", in.input_ids.sizes());
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

torch::Tensor DecoderVlmImpl::run_layers(torch::Tensor x, DecoderContext& ctx, VlmOutputs* out,
                                         const OutputRequest& request) {
  ctx.allowed = ctx.mask_mode == MaskMode::kCausal ? nn::causal_mask(x.size(1), ctx.past, ctx.attention_mask, x.device())
                                                  : nn::padding_mask(x.size(1), ctx.past, ctx.attention_mask, x.device());
  x = llm->begin(x, ctx);
  const bool states = out && request.hidden_states;
  for (int64_t i = 0; i < llm->num_layers(); ++i) {
    x = fusion->before_layer(i, x, ctx);
    if (states && i == 0) out->hidden_states.push_back(x);  // what layer 0 reads (after a cross-attention block)
    if (out && request.attentions) {
      nn::AttentionCapture capture(&out->attentions);  // the LM layer's own attention only
      x = forward_layer(i, x, ctx);
    } else {
      x = forward_layer(i, x, ctx);
    }
    if (states) out->hidden_states.push_back(x);
  }
  x = llm->finish(x);
  if (states && !out->hidden_states.empty()) out->hidden_states.back() = x;  // transformers ties the last to it
  return x;
}

torch::Tensor DecoderVlmImpl::forward_layer(int64_t index, const torch::Tensor& x, DecoderContext& ctx) {
  if (!overrides.layers.empty() && overrides.layers[index]) return overrides.layers[index](index, x, ctx);
  if (!checkpointing() || ctx.self_caches) return llm->layer(index, x, ctx);
  auto children = llm->named_children();
  const auto& block = children.contains("layers") ? *children["layers"]->children().at(index) : *llm;
  // A copy of the context (positions, mask, rotary tables): backward runs after this call returned.
  return checkpointed(block, [lm = llm, index, context = ctx](const torch::Tensor& input) mutable {
    return lm->layer(index, input, context);
  }, x);
}

torch::Tensor DecoderVlmImpl::placeholder_ids(const torch::Tensor& inputs_embeds) {
  // Stand-in input_ids for the fusion's masks: the image token where a row equals its embedding, else another id.
  const int64_t token = fusion->image_token_id();
  auto ids = torch::full({inputs_embeds.size(0), inputs_embeds.size(1)}, token == 0 ? 1 : 0,
                         inputs_embeds.options().dtype(torch::kLong));
  if (token < 0) return ids;
  torch::NoGradGuard no_grad;
  auto marker = llm->embed_tokens(torch::full({1}, token, ids.options())).to(inputs_embeds.scalar_type());
  return ids.masked_fill((inputs_embeds == marker).all(-1), token);
}

torch::Tensor DecoderVlmImpl::forward(const VlmInputs& in) { return forward_outputs(in, {}).logits; }

VlmOutputs DecoderVlmImpl::forward_outputs(const VlmInputs& in, const OutputRequest& request) {
  check_inputs(in);
  VlmOutputs out;
  torch::Tensor visual;
  if (in.pixel_values.defined()) {
    visual = encode_images(in.pixel_values, in.abstractor_text, request.hidden_states ? &out.vision_hidden_states : nullptr);
  }
  const bool embedded = in.inputs_embeds.defined();
  const auto ids = embedded ? placeholder_ids(in.inputs_embeds) : in.input_ids;
  const auto text_embeds = embedded ? in.inputs_embeds : llm->embed_tokens(ids);
  auto fused = fusion->fuse(ids, text_embeds, in.attention_mask, in.position_ids, visual, *llm);
  DecoderContext ctx;
  ctx.attention_mask = fused.attention_mask;
  ctx.visual = visual;
  ctx.media_mask = fusion->media_mask(ids, in.image_attention_mask, visual);
  const int64_t batch = fused.embeds.size(0), tokens = fused.embeds.size(1);
  ctx.positions = fused.position_ids.defined()
                      ? fused.position_ids
                      : llm->default_positions(fused.attention_mask, batch, tokens, fused.embeds.device());
  auto hidden = run_layers(fused.embeds, ctx, &out, request);
  if (fused.prefix > 0) hidden = hidden.narrow(1, fused.prefix, tokens - fused.prefix);
  out.logits = head->forward(hidden, *llm);
  out.visual = visual;
  return out;
}

void DecoderVlmImpl::set_vocab(const torch::Tensor& embed, const torch::Tensor& head_weight) {
  const int64_t token = fusion->image_token_id();
  TORCH_CHECK_VALUE(token < embed.size(0), "resize_token_embeddings: fusion.image_token_id ", token,
                    " would lie outside a vocabulary of ", embed.size(0));
  llm->set_vocab(embed, head_weight);
  auto json = to_json(config_);
  json["llm"]["vocab"] = embed.size(0);
  config_ = parse_model_config(json);
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
