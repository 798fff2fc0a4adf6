#pragma once
// Which assembly a config builds is family data: configs/families/<family>.json's "assembly"
// ("decoder": models/decoder_vlm.h; "dual_encoder": models/dual_encoder.h; "multiway_encoder":
// models/multiway_encoder.h).
#include "models/decoder_vlm.h"
#include "models/dual_encoder.h"
#include "models/multiway_encoder.h"

namespace vlmzoo::models {

// "decoder", "dual_encoder" or "multiway_encoder"; a family without the field is a decoder.
std::string assembly_of(const ModelConfig& config);
// Builds the config's assembly on the meta device: the checks across slots, without memory.
void check_model(const ModelConfig& config);
// A dual encoder, refused (naming its size) when larger than this machine's memory.
DualEncoder build_dual_encoder(const ModelConfig& config, const torch::TensorOptions& options, bool initialize);
// A multiway encoder (BEiT-3), refused the same way.
MultiwayEncoder build_multiway_encoder(const ModelConfig& config, const torch::TensorOptions& options, bool initialize);

}  // namespace vlmzoo::models
