// vlmzoo._C: binds the config parser and the model. Thin: no logic lives here.
#include <torch/extension.h>
#include <torch/python.h>

#include "config/model_config.h"
#include "models/vlm_model.h"

namespace py = pybind11;
using vlmzoo::config::ConfigError;
using vlmzoo::models::GenerateOptions;
using vlmzoo::models::VlmModelImpl;

namespace {
torch::Tensor or_undefined(const std::optional<torch::Tensor>& t) { return t ? *t : torch::Tensor(); }
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "vlmzoo C++ core";
  py::register_exception<ConfigError>(m, "ConfigError", PyExc_ValueError);

  m.def("resolve_config", [](const std::string& json_text) {
    return vlmzoo::config::to_json(vlmzoo::config::parse_model_config_string(json_text)).dump();
  }, py::arg("json_text"), "Parse, validate and fill defaults; returns the resolved config as JSON text.");
  m.def("family_names", &vlmzoo::config::family_names);

  torch::python::bind_module<VlmModelImpl>(m, "VlmModel")
      .def(py::init([](const std::string& json_text) {
             return std::make_shared<VlmModelImpl>(vlmzoo::config::parse_model_config_string(json_text));
           }),
           py::arg("json_text"))
      .def("forward",
           [](VlmModelImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& pixel_values,
              const std::optional<torch::Tensor>& attention_mask, const std::optional<torch::Tensor>& position_ids) {
             py::gil_scoped_release release;
             return self.forward(input_ids, or_undefined(pixel_values), or_undefined(attention_mask),
                                 or_undefined(position_ids));
           },
           py::arg("input_ids"), py::arg("pixel_values") = py::none(), py::arg("attention_mask") = py::none(),
           py::arg("position_ids") = py::none())
      .def("encode_images",
           [](VlmModelImpl& self, const torch::Tensor& pixel_values) {
             py::gil_scoped_release release;
             return self.encode_images(pixel_values);
           },
           py::arg("pixel_values"))
      .def("generate",
           [](VlmModelImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& pixel_values,
              const std::optional<torch::Tensor>& attention_mask, int64_t max_new_tokens, bool do_sample,
              double temperature, int64_t top_k, double top_p, std::vector<int64_t> eos_token_ids,
              int64_t pad_token_id, int64_t seed) {
             GenerateOptions o{max_new_tokens, do_sample, temperature, top_k, top_p, std::move(eos_token_ids),
                               pad_token_id, seed};
             py::gil_scoped_release release;
             return self.generate(input_ids, or_undefined(pixel_values), or_undefined(attention_mask), o);
           },
           py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask"), py::arg("max_new_tokens"),
           py::arg("do_sample"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("eos_token_ids"),
           py::arg("pad_token_id"), py::arg("seed"))
      .def("initialize_weights", &VlmModelImpl::initialize_weights, py::arg("std") = 0.02, py::arg("seed") = -1)
      .def("config_json", [](const VlmModelImpl& self) { return vlmzoo::config::to_json(self.config()).dump(); })
      .def_property("fused", &VlmModelImpl::fused, &VlmModelImpl::set_fused);
}
