// Run-time choice of the CPU kernel copy (see dispatch.h). CMake defines VLMZOO_CPU_KERNELS_<ISA>
// here for each copy it builds.
#include "ops/cpu/dispatch.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

namespace vlmzoo::ops::cpu {
namespace {

constexpr Isa kAllIsas[] = {Isa::avx512, Isa::avx2, Isa::baseline, Isa::reference};

const Kernels* built_kernels(Isa isa) {
  switch (isa) {
#ifdef VLMZOO_CPU_KERNELS_AVX512
    case Isa::avx512: return &avx512::kernels;
#endif
#ifdef VLMZOO_CPU_KERNELS_AVX2
    case Isa::avx2: return &avx2::kernels;
#endif
#ifdef VLMZOO_CPU_KERNELS_BASELINE
    case Isa::baseline: return &baseline::kernels;
#endif
    default: return nullptr;
  }
}

bool cpu_has(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();  // idempotent; needed if this runs before libgcc's own initialiser
#endif
  switch (isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    case Isa::baseline:
    case Isa::reference: return true;
    default: return false;
  }
}

bool runnable(Isa isa) { return cpu_has(isa) && (isa == Isa::reference || built_kernels(isa) != nullptr); }

std::string joined(const std::vector<Isa>& isas) {
  std::string out;
  for (Isa isa : isas) out += (out.empty() ? "" : ", ") + std::string(isa_name(isa));
  return out;
}

struct Choice {
  Isa isa = Isa::reference;
  std::string error;  // non-empty: VLMZOO_CPU_ISA is invalid
};

Choice choose() {
  const auto supported = supported_isas();
  const char* env = std::getenv("VLMZOO_CPU_ISA");
  std::string asked = env == nullptr ? "" : env;
  std::transform(asked.begin(), asked.end(), asked.begin(), [](unsigned char c) { return std::tolower(c); });
  if (asked.empty()) return {supported.front(), ""};
  for (Isa isa : kAllIsas) {
    if (asked != isa_name(isa)) continue;
    if (runnable(isa)) return {isa, ""};
    const char* lacking = cpu_has(isa) ? "this build (CMake VLMZOO_CPU_ISAS)" : "this CPU";
    return {Isa::reference, "VLMZOO_CPU_ISA=" + std::string(env) + " asks for kernels that " + lacking +
                                " lacks; the levels supported here are: " + joined(supported)};
  }
  return {Isa::reference, "VLMZOO_CPU_ISA=" + std::string(env) +
                              " is not a CPU level; expected one of avx512, avx2, baseline, reference "
                              "(supported here: " + joined(supported) + ")"};
}

const Choice& choice() {
  static const Choice chosen = choose();
  return chosen;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::baseline: return "baseline";
    case Isa::reference: return "reference";
  }
  return "unknown";
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (runnable(isa)) out.push_back(isa);
  return out;
}

Isa active_isa() {
  const auto& chosen = choice();
  TORCH_CHECK(chosen.error.empty(), chosen.error);
  return chosen.isa;
}

const Kernels* active_kernels() { return built_kernels(active_isa()); }

const Kernels* kernels_for(Isa isa) { return runnable(isa) ? built_kernels(isa) : nullptr; }

bool cpu_has_avx512_vnni() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

}  // namespace vlmzoo::ops::cpu
