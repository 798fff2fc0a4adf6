#pragma once
// Refuses, before anything is allocated, a model whose parameters would not fit in this machine's
// memory: a 13B config typed by mistake should be a ConfigError naming its size, not an OOM kill.
#include <torch/torch.h>

namespace vlmzoo::models {

// `shapes` is the same model built on the meta device; `dtype` the dtype it will be built in.
void refuse_if_larger_than_memory(const torch::nn::Module& shapes, torch::ScalarType dtype);

}  // namespace vlmzoo::models
