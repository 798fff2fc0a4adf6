#pragma once
// Which copy of the CPU kernels runs (see kernels.h): the best instruction set that both this build
// (VLMZOO_CPU_ISAS) and the running CPU have, else the ATen references. The environment variable
// VLMZOO_CPU_ISA=avx512|avx2|baseline|reference, read once, forces a level this CPU and build have;
// any other value, or a level they lack, is an error (c10::Error, a RuntimeError in Python) raised
// by every CPU op call and by cpu_isa(), rather than a silent run at another level.
#include <string>
#include <vector>

#include "ops/cpu/kernels.h"

namespace vlmzoo::ops::cpu {

// Best first. avx512: AVX-512 F/BW/VL/DQ; avx2: AVX2 + FMA + F16C; baseline: the build's own flags
// (the only copy on non-x86 machines); reference: the plain-ATen references, no kernels.
enum class Isa { avx512, avx2, baseline, reference };

const char* isa_name(Isa isa);
// The levels this build and CPU can run, best first (reference always last).
std::vector<Isa> supported_isas();
// The level the CPU ops run at; throws when VLMZOO_CPU_ISA is invalid.
Isa active_isa();
// The kernels of active_isa(); null for the references.
const Kernels* active_kernels();
// The kernels of one level, null unless it is in supported_isas() with kernels (tests call every copy).
const Kernels* kernels_for(Isa isa);
// Whether this CPU runs AVX512-VNNI (vpdpbusd), which the avx512 copy's linear_int8 needs.
bool cpu_has_avx512_vnni();

}  // namespace vlmzoo::ops::cpu
