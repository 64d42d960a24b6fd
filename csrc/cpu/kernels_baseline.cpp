// The dispatched CPU kernels compiled for the module's own target: the x86-64 baseline (SSE2, no
// FMA) on x86-64 -- they run on every x86-64 CPU -- and NEON on aarch64 (part of its baseline).
#include "kernels_prelude.h"

#define DESRA_HAVE_AVX512 0
#define DESRA_HAVE_AVX2 0
#define DESRA_VBYTES 16
#define DESRA_ISA baseline
#if defined(__aarch64__)
#define DESRA_ISA_NAME "neon"
#else
#define DESRA_ISA_NAME "baseline"
#endif
#define DESRA_ISA_TABLE kKernelsBaseline
#include "kernels_isa.inc"
