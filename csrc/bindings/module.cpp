// vlmzoo._C: binds the config parser, the registry's listings and the model. Thin: no logic lives here.
#include <torch/extension.h>
#include <torch/python.h>

#include "bindings/or_undefined.h"

#include "config/families.h"
#include "models/assembly.h"

namespace py = pybind11;
using vlmzoo::config::ConfigError;
using vlmzoo::models::DecoderVlmImpl;
using vlmzoo::models::GenerateOptions;
using vlmzoo::models::VlmInputs;

namespace {

torch::ScalarType dtype_named(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  throw std::invalid_argument("dtype: \"" + name + "\" is not one of float32, float64, bfloat16, float16");
}

VlmInputs inputs(const torch::Tensor& input_ids, const std::optional<torch::Tensor>& pixel_values,
                 const std::optional<torch::Tensor>& attention_mask, const std::optional<torch::Tensor>& position_ids,
                 const std::optional<torch::Tensor>& qformer_input_ids,
                 const std::optional<torch::Tensor>& qformer_attention_mask,
                 const std::optional<torch::Tensor>& image_attention_mask) {
  return {input_ids, or_undefined(pixel_values), or_undefined(attention_mask), or_undefined(position_ids),
          {or_undefined(qformer_input_ids), or_undefined(qformer_attention_mask)}, or_undefined(image_attention_mask)};
}
}  // namespace

namespace vlmzoo::bindings {
void bind_bert(py::module_& m);  // bindings/bert.cpp
void bind_blocks(py::module_& m);  // bindings/blocks.cpp
void bind_dual_encoder(py::module_& m);  // bindings/dual_encoder.cpp
void bind_multiway_encoder(py::module_& m);  // bindings/multiway_encoder.cpp
void bind_weight_formats(py::module_& m);  // bindings/weight_formats.cpp
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vlmzoo C++ core";
  py::register_exception<ConfigError>(m, "ConfigError", PyExc_ValueError);

  m.def("resolve_config", [](const std::string& json_text) {
    auto config = vlmzoo::models::parse_model_config_string(json_text);
    vlmzoo::models::check_model(config);  // the family's assembly on the meta device: checks across slots
    return vlmzoo::models::to_json(config).dump();
  }, py::arg("json_text"), "Parse, validate (building on the meta device) and fill defaults; returns JSON text.");
  m.def("family_names", &vlmzoo::config::family_names);
  m.def("family_json", [](const std::string& name) { return vlmzoo::config::family(name).dump(); }, py::arg("name"));
  m.def("registered_kinds", &vlmzoo::models::registered_kinds, py::arg("slot"));
  m.def("slot_names", &vlmzoo::models::slot_names);
  vlmzoo::bindings::bind_bert(m);
  vlmzoo::bindings::bind_blocks(m);
  vlmzoo::bindings::bind_dual_encoder(m);
  vlmzoo::bindings::bind_multiway_encoder(m);
  vlmzoo::bindings::bind_weight_formats(m);

  torch::python::bind_module<DecoderVlmImpl>(m, "VlmModel")
      .def(py::init([](const std::string& json_text, const std::string& device, const std::string& dtype,
                       bool initialize) {
             auto options = torch::TensorOptions().device(torch::Device(device)).dtype(dtype_named(dtype));
             return vlmzoo::models::build_model(vlmzoo::models::parse_model_config_string(json_text), options,
                                                initialize)
                 .ptr();
           }),
           py::arg("json_text"), py::arg("device") = "cpu", py::arg("dtype") = "float32", py::arg("initialize") = true)
      .def("forward",
           [](DecoderVlmImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& pixel_values,
              const std::optional<torch::Tensor>& attention_mask, const std::optional<torch::Tensor>& position_ids,
              const std::optional<torch::Tensor>& qformer_input_ids,
              const std::optional<torch::Tensor>& qformer_attention_mask,
              const std::optional<torch::Tensor>& image_attention_mask) {
             auto in = inputs(input_ids, pixel_values, attention_mask, position_ids, qformer_input_ids,
                              qformer_attention_mask, image_attention_mask);
             py::gil_scoped_release release;
             return self.forward(in);
           },
           py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
           py::arg("position_ids") = py::none(), py::arg("qformer_input_ids") = py::none(),
           py::arg("qformer_attention_mask") = py::none(), py::arg("image_attention_mask") = py::none())
      // transformers' full call: (logits, hidden_states, attentions, vision_hidden_states, visual tokens);
      // the lists are empty unless asked for.
      .def("forward_outputs",
           [](DecoderVlmImpl& self, const std::optional<torch::Tensor>& input_ids,
              const std::optional<torch::Tensor>& pixel_values, const std::optional<torch::Tensor>& attention_mask,
              const std::optional<torch::Tensor>& position_ids, const std::optional<torch::Tensor>& qformer_input_ids,
              const std::optional<torch::Tensor>& qformer_attention_mask,
              const std::optional<torch::Tensor>& image_attention_mask,
              const std::optional<torch::Tensor>& inputs_embeds, bool output_hidden_states, bool output_attentions) {
             auto in = inputs(or_undefined(input_ids), pixel_values, attention_mask, position_ids, qformer_input_ids,
                              qformer_attention_mask, image_attention_mask);
             in.inputs_embeds = or_undefined(inputs_embeds);
             vlmzoo::models::VlmOutputs out;
             {
               py::gil_scoped_release release;
               out = self.forward_outputs(in, {output_hidden_states, output_attentions});
             }
             return py::make_tuple(out.logits, out.hidden_states, out.attentions, out.vision_hidden_states,
                                   out.visual.defined() ? py::cast(out.visual) : py::none());
           },
           py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
           py::arg("position_ids") = py::none(), py::arg("qformer_input_ids") = py::none(),
           py::arg("qformer_attention_mask") = py::none(), py::arg("image_attention_mask") = py::none(),
           py::arg("inputs_embeds") = py::none(), py::arg("output_hidden_states") = false,
           py::arg("output_attentions") = false)
      .def("set_gradient_checkpointing", &DecoderVlmImpl::set_gradient_checkpointing, py::arg("on"))
      .def("gradient_checkpointing", &DecoderVlmImpl::gradient_checkpointing)
      .def("input_embeddings", [](DecoderVlmImpl& self) { return self.llm->input_embeddings(); })
      .def("tied_embeddings", [](DecoderVlmImpl& self) { return self.llm->tied_embeddings(); })
      .def("set_vocab",
           [](DecoderVlmImpl& self, const torch::Tensor& embed, const std::optional<torch::Tensor>& head) {
             self.set_vocab(embed, or_undefined(head));
           },
           py::arg("embed"), py::arg("head") = py::none())
      .def("encode_images",
           [](DecoderVlmImpl& self, const torch::Tensor& pixel_values, const std::optional<torch::Tensor>& qformer_input_ids,
              const std::optional<torch::Tensor>& qformer_attention_mask) {
             py::gil_scoped_release release;
             return self.encode_images(pixel_values, {or_undefined(qformer_input_ids), or_undefined(qformer_attention_mask)});
           },
           py::arg("pixel_values"), py::arg("qformer_input_ids") = py::none(),
           py::arg("qformer_attention_mask") = py::none())
      .def("generate",
           [](DecoderVlmImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& pixel_values,
              const std::optional<torch::Tensor>& attention_mask, const std::optional<torch::Tensor>& qformer_input_ids,
              const std::optional<torch::Tensor>& qformer_attention_mask, int64_t max_new_tokens,
              int64_t min_new_tokens, bool do_sample, double temperature, int64_t top_k, double top_p,
              double repetition_penalty, std::vector<int64_t> eos_token_ids, int64_t pad_token_id, int64_t seed,
              int64_t no_repeat_ngram_size, const py::object& on_tokens,
              const std::optional<torch::Tensor>& image_attention_mask) {
             GenerateOptions o{max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                               repetition_penalty, no_repeat_ngram_size, std::move(eos_token_ids), pad_token_id,
                               seed};
             if (!on_tokens.is_none()) {
               // Runs on the generating thread with the GIL released: take it for the Python call. A
               // Python exception comes back as error_already_set, unwinds generate, and pybind11
               // restores it as the original exception.
               o.on_tokens = [on_tokens](const torch::Tensor& tokens) {
                 py::gil_scoped_acquire gil;
                 on_tokens(tokens);
               };
             }
             auto in = inputs(input_ids, pixel_values, attention_mask, std::nullopt, qformer_input_ids,
                              qformer_attention_mask, image_attention_mask);
             py::gil_scoped_release release;
             return self.generate(in, o);
           },
           py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask"), py::arg("qformer_input_ids"),
           py::arg("qformer_attention_mask"), py::arg("max_new_tokens"), py::arg("min_new_tokens"),
           py::arg("do_sample"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
           py::arg("repetition_penalty"), py::arg("eos_token_ids"), py::arg("pad_token_id"), py::arg("seed"),
           py::arg("no_repeat_ngram_size") = 0, py::arg("on_tokens") = py::none(),
           py::arg("image_attention_mask") = py::none())
      .def("initialize_weights", &DecoderVlmImpl::initialize_weights, py::arg("std") = 0.02, py::arg("seed") = -1)
      .def("config_json", [](const DecoderVlmImpl& self) { return vlmzoo::models::to_json(self.config()).dump(); })
      .def("visual_tokens_per_image", &DecoderVlmImpl::visual_tokens_per_image)
      .def("visual_tokens_for_image", &DecoderVlmImpl::visual_tokens_for_image, py::arg("height"), py::arg("width"))
      .def("forward_flops", &DecoderVlmImpl::forward_flops, py::arg("text_tokens"), py::arg("images"))
      .def("reads_text", [](const DecoderVlmImpl& self) { return self.abstractor && self.abstractor->reads_text(); })
      // Methods, not a property: torch's ModuleWrapper would keep an assigned attribute on the Python side.
      .def("set_fused", &DecoderVlmImpl::set_fused, py::arg("fused"))
      .def("is_fused", &DecoderVlmImpl::fused);
}
