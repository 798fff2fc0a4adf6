// The training kernels of this copy (one per instruction set, see vec.h) as one table.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include "ops/cpu/training_kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {

const TrainingKernels training_kernels{&rms_norm_backward, &act_backward, &cross_entropy, &cross_entropy_backward};

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
