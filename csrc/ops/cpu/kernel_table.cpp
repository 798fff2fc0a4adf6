// The kernels of this copy (one per instruction set, see vec.h) as one table for cpu/dispatch.cpp.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {

const Kernels kernels{&rms_norm, &layer_norm, &bias_act, &gated_act, &rope, &attention, &attention_backward};

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
