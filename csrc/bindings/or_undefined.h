#pragma once
// pybind11 gives an omitted optional tensor argument as std::nullopt; the C++ models take an undefined
// tensor for "none". One definition for every bindings file (the sanitizer's unity build compiles several
// of them as one translation unit, where per-file copies collide).
#include <torch/torch.h>

#include <optional>

inline torch::Tensor or_undefined(const std::optional<torch::Tensor>& t) { return t ? *t : torch::Tensor(); }
