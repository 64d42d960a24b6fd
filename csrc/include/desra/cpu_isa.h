// Runtime instruction-set dispatch of the CPU kernels.
//
// The hot kernels (D map, fused pre-mask, bit-mask packing) are compiled several times into the
// one module, once per instruction set, each copy in its own namespace (desra::avx512,
// desra::avx2, desra::baseline; see csrc/cpu/kernels_*.cpp). The rest of the module is built for
// the x86-64 baseline (or the build machine's default target elsewhere). One copy is selected
// when the module loads -- the best one cpuid says this CPU and OS can run -- and can be changed
// later (desra_fast reads DESRA_CPU_ISA at import); a copy the CPU cannot run is refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace desra {

struct DmapCall;     // desra/dmap_cpu.h
struct PremaskCall;

// One instruction set's copy of the dispatched kernels.
struct CpuKernels {
  const char* name;  // "avx512", "avx2", "baseline" (or "neon" on aarch64)
  void (*dmap)(const DmapCall&);
  void (*premask)(const PremaskCall&);
  void (*pack_row)(const uint8_t* p, ptrdiff_t sx, int64_t w, uint64_t* out);
  void (*unpack_row)(const uint64_t* in, int64_t w, uint8_t* p, ptrdiff_t sx);
};

// The copy in use (never null).
const CpuKernels& cpu_kernels();
// Names of the copies this CPU can run, best first.
std::vector<std::string> available_isas();
// Names of every copy compiled into this module, best first.
std::vector<std::string> compiled_isas();
// Selects a copy by name ("auto" = the best available). Throws std::invalid_argument for an
// unknown name and std::runtime_error for one this CPU cannot run.
void select_isa(const std::string& name);

}  // namespace desra
