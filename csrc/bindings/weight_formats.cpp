// vlmzoo._C.set_weight_format / weight_format: the storage of every nn::Linear of a model (nn/linear.h).
// Thin: no logic lives here. Called with the C++ module itself (a ModuleWrapper's .cpp_module).
#include <torch/extension.h>
#include <torch/python.h>

#include "nn/linear.h"

namespace py = pybind11;

namespace vlmzoo::bindings {

void bind_weight_formats(py::module_& m) {
  m.def("set_weight_format",
        [](torch::nn::Module& root, const std::string& format) {
          const auto parsed = nn::weight_format_named(format);
          py::gil_scoped_release release;
          return nn::set_weight_format(root, parsed);
        },
        py::arg("module"), py::arg("format"),
        "Packs every nn::Linear under module into format (\"bf16\" | \"int8\"); returns how many.");
  m.def("weight_format", [](const torch::nn::Module& root) { return nn::weight_format_name(nn::weight_format_of(root)); },
        py::arg("module"), "\"float\", \"bf16\" or \"int8\": how the nn::Linears under module store their weights.");
}

}  // namespace vlmzoo::bindings
