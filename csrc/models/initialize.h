#pragma once
// Training-from-scratch initialisation by parameter name, as transformers' _init_weights: a
// parameter whose owning module's name contains "norm" -> 1 (bias 0), other biases 0, every other
// weight N(0, std). Meta parameters are skipped. seed < 0 draws from torch's global generator.
// Every assembly's initialize_weights calls it.
#include <torch/torch.h>

namespace vlmzoo::models {

void initialize_by_name(torch::nn::Module& module, double std, int64_t seed);

}  // namespace vlmzoo::models
