// vlmzoo._C.MultiwayEncoderModel: the multiway-encoder assembly (models/multiway_encoder.h), BEiT-3.
// Thin: no logic lives here.
#include <torch/extension.h>
#include <torch/python.h>

#include "models/assembly.h"

namespace py = pybind11;

namespace vlmzoo::bindings {

namespace {
torch::ScalarType multiway_dtype_named(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  throw std::invalid_argument("dtype: \"" + name + "\" is not one of float32, float64, bfloat16, float16");
}
torch::Tensor given(const std::optional<torch::Tensor>& t) { return t ? *t : torch::Tensor(); }
}  // namespace

void bind_multiway_encoder(py::module_& m) {
  using models::MultiwayEncoderImpl;
  torch::python::bind_module<MultiwayEncoderImpl>(m, "MultiwayEncoderModel")
      .def(py::init([](const std::string& json_text, const std::string& device, const std::string& dtype,
                       bool initialize) {
             auto options = torch::TensorOptions().device(torch::Device(device)).dtype(multiway_dtype_named(dtype));
             return models::build_multiway_encoder(models::parse_model_config_string(json_text), options, initialize)
                 .ptr();
           }),
           py::arg("json_text"), py::arg("device") = "cpu", py::arg("dtype") = "float32", py::arg("initialize") = true)
      // Returns (last_hidden_state or None, {head output name: tensor}).
      .def("forward",
           [](MultiwayEncoderImpl& self, const std::optional<torch::Tensor>& input_ids,
              const std::optional<torch::Tensor>& pixel_values, const std::optional<torch::Tensor>& attention_mask) {
             models::MultiwayOutputs out;
             {
               py::gil_scoped_release release;
               out = self.run(given(input_ids), given(pixel_values), given(attention_mask));
             }
             py::object hidden = out.last_hidden_state.defined() ? py::cast(out.last_hidden_state) : py::none();
             return py::make_tuple(hidden, out.head);
           },
           py::arg("input_ids") = py::none(), py::arg("pixel_values") = py::none(),
           py::arg("attention_mask") = py::none())
      .def("initialize_weights", &MultiwayEncoderImpl::initialize_weights, py::arg("std") = 0.02, py::arg("seed") = -1)
      .def("config_json", [](const MultiwayEncoderImpl& self) { return models::to_json(self.config()).dump(); })
      .def("visual_tokens_per_image", &MultiwayEncoderImpl::visual_tokens_per_image)
      .def("forward_flops", &MultiwayEncoderImpl::forward_flops, py::arg("text_tokens"), py::arg("images"))
      .def("set_fused", &MultiwayEncoderImpl::set_fused, py::arg("fused"))
      .def("is_fused", &MultiwayEncoderImpl::fused);
}

}  // namespace vlmzoo::bindings
