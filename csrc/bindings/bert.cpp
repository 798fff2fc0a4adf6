// vlmzoo._C.BertEncoder: the BERT encoder of nn/bert.h (transformers' BertModel up to
// last_hidden_state), bound so its numerics can be checked on real BERT weights. Thin: no logic here.
#include <torch/extension.h>
#include <torch/python.h>

#include "nn/bert.h"

namespace py = pybind11;

namespace vlmzoo::bindings {

void bind_bert(py::module_& m) {
  using nn::BertEncoderImpl;
  torch::python::bind_module<BertEncoderImpl>(m, "BertEncoder")
      .def(py::init([](int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t mlp,
                       int64_t max_positions, int64_t type_vocab, int64_t pad_token_id, const std::string& act,
                       double eps, bool fused) {
             nn::BertEncoderOptions o{vocab, max_positions, type_vocab, pad_token_id,
                                      nn::BertLayerOptions{hidden, heads, mlp, act, eps}, layers};
             return std::make_shared<BertEncoderImpl>(o, std::make_shared<nn::KernelPolicy>(nn::KernelPolicy{fused}),
                                                      torch::TensorOptions());
           }),
           py::arg("vocab"), py::arg("hidden"), py::arg("layers"), py::arg("heads"), py::arg("mlp"),
           py::arg("max_positions"), py::arg("type_vocab") = 2, py::arg("pad_token_id") = 0, py::arg("act") = "gelu",
           py::arg("eps") = 1e-12, py::arg("fused") = true)
      .def("forward",
           [](BertEncoderImpl& self, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& attention_mask,
              const std::optional<torch::Tensor>& token_type_ids) {
             py::gil_scoped_release release;
             return self.forward(input_ids, attention_mask.value_or(torch::Tensor()),
                                 token_type_ids.value_or(torch::Tensor()));
           },
           py::arg("input_ids"), py::arg("attention_mask") = py::none(), py::arg("token_type_ids") = py::none());
}

}  // namespace vlmzoo::bindings
