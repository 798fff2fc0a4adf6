// vlmzoo._C block entry points: one block of a model at a time (what the Python views call), and the
// overrides through which a block hooked or replaced from Python runs inside the C++ forward and
// generate (vlmzoo/models/blocks.py decides when). Thin: the logic is models/decoder_blocks.cpp's.
#include <torch/extension.h>

#include "bindings/or_undefined.h"

#include "models/decoder_vlm.h"
#include "nn/linear.h"

#include <algorithm>

namespace py = pybind11;
using vlmzoo::models::AbstractorText;
using vlmzoo::models::DecoderContext;
using vlmzoo::models::DecoderVlmImpl;

namespace {

// A Python callable held by C++: released with the GIL, whichever thread drops the last reference.
std::shared_ptr<py::object> hold(py::object fn) {
  return {new py::object(std::move(fn)), [](py::object* p) {
            py::gil_scoped_acquire gil;
            delete p;
          }};
}

vlmzoo::nn::Overridable& overridable_of(const std::shared_ptr<torch::nn::Module>& module) {
  auto* block = dynamic_cast<vlmzoo::nn::Overridable*>(module.get());
  TORCH_CHECK_VALUE(block, "expected a block that can be hooked (a norm, attention, MLP, ...), got ", module->name());
  return *block;
}

std::vector<torch::Tensor> tensors_of(const std::vector<std::optional<torch::Tensor>>& inputs) {
  std::vector<torch::Tensor> out;
  out.reserve(inputs.size());
  for (const auto& t : inputs) out.push_back(or_undefined(t));
  return out;
}

vlmzoo::nn::LinearImpl& linear_of(const std::shared_ptr<torch::nn::Module>& module) {
  auto* linear = dynamic_cast<vlmzoo::nn::LinearImpl*>(module.get());
  TORCH_CHECK_VALUE(linear, "expected a vlmzoo Linear block, got ", module->name());
  return *linear;
}
}  // namespace

namespace vlmzoo::bindings {

void bind_blocks(py::module_& m) {
  // Borrowed by a view while a hooked layer runs inside forward; never kept past the call.
  py::class_<DecoderContext>(m, "DecoderContext")
      .def_readonly("positions", &DecoderContext::positions)
      .def_readonly("attention_mask", &DecoderContext::attention_mask)
      .def_readonly("past", &DecoderContext::past);

  m.def("run_vision", [](DecoderVlmImpl& self, const torch::Tensor& pixel_values) {
    py::gil_scoped_release release;
    return self.run_vision(pixel_values);
  }, py::arg("model"), py::arg("pixel_values"));
  m.def("run_abstractor", [](DecoderVlmImpl& self, const torch::Tensor& features,
                             const std::optional<torch::Tensor>& input_ids,
                             const std::optional<torch::Tensor>& attention_mask) {
    AbstractorText text{or_undefined(input_ids), or_undefined(attention_mask)};
    py::gil_scoped_release release;
    return self.run_abstractor(features, text);
  }, py::arg("model"), py::arg("features"), py::arg("qformer_input_ids") = py::none(),
     py::arg("qformer_attention_mask") = py::none());
  m.def("layer_context", [](DecoderVlmImpl& self, const torch::Tensor& hidden,
                            const std::optional<torch::Tensor>& attention_mask,
                            const std::optional<torch::Tensor>& position_ids) {
    return self.layer_context(hidden, or_undefined(attention_mask), or_undefined(position_ids));
  }, py::arg("model"), py::arg("hidden_states"), py::arg("attention_mask") = py::none(),
     py::arg("position_ids") = py::none());
  m.def("run_layer", [](DecoderVlmImpl& self, int64_t index, const torch::Tensor& hidden, DecoderContext& ctx) {
    py::gil_scoped_release release;
    return self.run_layer(index, hidden, ctx);
  }, py::arg("model"), py::arg("index"), py::arg("hidden_states"), py::arg("context"));
  // One call of a hooked block (nn/overridable.h): its inputs, and its own computation over such inputs.
  py::class_<vlmzoo::nn::BlockCall, std::shared_ptr<vlmzoo::nn::BlockCall>>(m, "BlockCall")
      .def_readonly("inputs", &vlmzoo::nn::BlockCall::inputs)
      .def("__call__", [](vlmzoo::nn::BlockCall& self, const std::vector<std::optional<torch::Tensor>>& inputs) {
        TORCH_CHECK_VALUE(self.own, "this block call has returned; a view runs its block's call only during it");
        auto own = self.own;
        auto in = tensors_of(inputs);
        py::gil_scoped_release release;
        return own(in);
      }, py::arg("inputs"));
  m.def("is_overridable", [](const std::shared_ptr<torch::nn::Module>& module) {
    return dynamic_cast<vlmzoo::nn::Overridable*>(module.get()) != nullptr;
  }, py::arg("module"));
  m.def("run_block", [](const std::shared_ptr<torch::nn::Module>& module,
                        const std::vector<std::optional<torch::Tensor>>& inputs) {
    auto& block = overridable_of(module);
    auto in = tensors_of(inputs);
    TORCH_CHECK_VALUE(!in.empty() && in[0].defined(), "a block takes its input tensor first");
    py::gil_scoped_release release;
    return block.run_alone(in);
  }, py::arg("module"), py::arg("inputs"));
  m.def("run_layer_attention", [](DecoderVlmImpl& self, int64_t index, const torch::Tensor& hidden,
                                  DecoderContext& ctx) {
    py::gil_scoped_release release;
    return self.run_layer_attention(index, hidden, ctx);
  }, py::arg("model"), py::arg("index"), py::arg("hidden_states"), py::arg("context"));
  m.def("run_head", [](DecoderVlmImpl& self, const torch::Tensor& hidden) {
    py::gil_scoped_release release;
    return self.run_head(hidden);
  }, py::arg("model"), py::arg("hidden_states"));
  m.def("linear_forward", [](const std::shared_ptr<torch::nn::Module>& module, const torch::Tensor& x) {
    auto& linear = linear_of(module);
    py::gil_scoped_release release;
    return linear.forward_own(x);
  }, py::arg("module"), py::arg("x"));

  // Overrides: fn None clears. The C++ forward calls fn with the block's inputs, GIL taken.
  m.def("set_linear_override", [](const std::shared_ptr<torch::nn::Module>& module, const py::object& fn) {
    auto& linear = linear_of(module);
    if (fn.is_none()) {
      linear.override_forward = nullptr;
      return;
    }
    linear.override_forward = [held = hold(fn)](const torch::Tensor& x) {
      py::gil_scoped_acquire gil;
      return (*held)(x).cast<torch::Tensor>();
    };
  }, py::arg("module"), py::arg("fn"));
  m.def("set_override", [](const std::shared_ptr<torch::nn::Module>& module, const py::object& fn) {
    auto& block = overridable_of(module);
    if (fn.is_none()) {
      block.override_forward = nullptr;
      return;
    }
    block.override_forward = [held = hold(fn)](const std::shared_ptr<vlmzoo::nn::BlockCall>& call) {
      py::gil_scoped_acquire gil;
      return (*held)(call).cast<torch::Tensor>();
    };
  }, py::arg("module"), py::arg("fn"));
  m.def("set_block_override", [](DecoderVlmImpl& self, const std::string& block, int64_t index, const py::object& fn) {
    auto& o = self.overrides;
    const bool clear = fn.is_none();
    auto held = clear ? nullptr : hold(fn);
    if (block == "vision") {
      o.vision = clear ? nullptr : std::function<torch::Tensor(const torch::Tensor&)>([held](const torch::Tensor& x) {
        py::gil_scoped_acquire gil;
        return (*held)(x).cast<torch::Tensor>();
      });
    } else if (block == "abstractor") {
      o.abstractor = clear ? nullptr
                           : std::function<torch::Tensor(const torch::Tensor&, const AbstractorText&)>(
                                 [held](const torch::Tensor& x, const AbstractorText& text) {
                                   py::gil_scoped_acquire gil;
                                   auto optional = [](const torch::Tensor& t) {
                                     return t.defined() ? py::cast(t) : py::none();
                                   };
                                   return (*held)(x, optional(text.input_ids), optional(text.attention_mask))
                                       .cast<torch::Tensor>();
                                 });
    } else if (block == "layer") {
      const int64_t layers = self.llm->num_layers();
      TORCH_CHECK_INDEX(index >= 0 && index < layers, "llm.layers: index ", index, " out of range for ", layers,
                        " layers");
      o.layers.resize(layers);
      if (clear) {
        o.layers[index] = nullptr;
      } else {
        o.layers[index] = [held](int64_t i, const torch::Tensor& x, DecoderContext& ctx) {
          py::gil_scoped_acquire gil;
          return (*held)(i, x, py::cast(&ctx, py::return_value_policy::reference)).cast<torch::Tensor>();
        };
      }
      if (std::none_of(o.layers.begin(), o.layers.end(), [](const auto& f) { return bool(f); })) o.layers.clear();
    } else {
      TORCH_CHECK_VALUE(false, "block: \"", block, "\" is not one of vision, abstractor, layer");
    }
  }, py::arg("model"), py::arg("block"), py::arg("index"), py::arg("fn"));
  m.def("set_python_in_vision", [](DecoderVlmImpl& self, bool on) { self.overrides.python_in_vision = on; },
        py::arg("model"), py::arg("on"));
}

}  // namespace vlmzoo::bindings
