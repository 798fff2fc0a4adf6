// vlmzoo._C.set_weight_format / weight_format: the storage of every nn::Linear of a model (nn/linear.h).
// Thin: no logic lives here. Called with the C++ module itself (a ModuleWrapper's .cpp_module).
#include <torch/extension.h>
#include <torch/python.h>

#include "nn/linear.h"
#include "ops/linear_formats.h"

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
  m.def("set_bf16_amx", &ops::set_bf16_amx, py::arg("enabled"),
        "Whether linear_bf16 multiplies more than 32 rows on AMX tiles (activations rounded to bf16) where the CPU has them.");
  m.def("bf16_amx", &ops::bf16_amx, "True when linear_bf16's prefill runs on AMX tiles (the switch is on and the CPU has AMX-BF16).");
}

}  // namespace vlmzoo::bindings
