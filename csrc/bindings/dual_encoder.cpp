// vlmzoo._C.DualEncoderModel: the dual-encoder assembly (models/dual_encoder.h), CLIP and SigLIP.
// Thin: no logic lives here.
#include <torch/extension.h>
#include <torch/python.h>

#include "bindings/or_undefined.h"

#include "models/assembly.h"

namespace py = pybind11;

namespace vlmzoo::bindings {

namespace {
torch::ScalarType dtype_named(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  throw std::invalid_argument("dtype: \"" + name + "\" is not one of float32, float64, bfloat16, float16");
}
}  // namespace

void bind_dual_encoder(py::module_& m) {
  using models::DualEncoderImpl;
  torch::python::bind_module<DualEncoderImpl>(m, "DualEncoderModel")
      .def(py::init([](const std::string& json_text, const std::string& device, const std::string& dtype,
                       bool initialize) {
             auto options = torch::TensorOptions().device(torch::Device(device)).dtype(dtype_named(dtype));
             return models::build_dual_encoder(models::parse_model_config_string(json_text), options, initialize)
                 .ptr();
           }),
           py::arg("json_text"), py::arg("device") = "cpu", py::arg("dtype") = "float32", py::arg("initialize") = true)
      // Returns (logits_per_image, logits_per_text, image_embeds, text_embeds).
      .def("forward",
           [](DualEncoderImpl& self, const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
              const std::optional<torch::Tensor>& attention_mask) {
             auto mask = or_undefined(attention_mask);
             py::gil_scoped_release release;
             auto out = self.score(input_ids, pixel_values, mask);
             return std::make_tuple(out.logits_per_image, out.logits_per_text, out.image_embeds, out.text_embeds);
           },
           py::arg("input_ids"), py::arg("pixel_values"), py::arg("attention_mask") = py::none())
      .def("encode_images",
           [](DualEncoderImpl& self, const torch::Tensor& pixel_values, bool normalize) {
             py::gil_scoped_release release;
             return self.encode_images(pixel_values, normalize);
           },
           py::arg("pixel_values"), py::arg("normalize") = true)
      .def("encode_texts",
           [](DualEncoderImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& attention_mask,
              bool normalize) {
             auto mask = or_undefined(attention_mask);
             py::gil_scoped_release release;
             return self.encode_texts(input_ids, mask, normalize);
           },
           py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("normalize") = true)
      .def("initialize_weights", &DualEncoderImpl::initialize_weights, py::arg("std") = 0.02, py::arg("seed") = -1)
      .def("config_json", [](const DualEncoderImpl& self) { return models::to_json(self.config()).dump(); })
      .def("embed_dim", &DualEncoderImpl::embed_dim)
      .def("forward_flops", &DualEncoderImpl::forward_flops, py::arg("text_tokens"), py::arg("images"),
           py::arg("texts") = 1)
      .def("set_fused", &DualEncoderImpl::set_fused, py::arg("fused"))
      .def("is_fused", &DualEncoderImpl::fused);
}

}  // namespace vlmzoo::bindings
