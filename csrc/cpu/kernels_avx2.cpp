// The dispatched CPU kernels compiled for AVX2 + FMA (x86-64 only). Chosen at run time when cpuid
// reports these (and the OS saves ymm state): desra/cpu_isa.h.
#include "kernels_prelude.h"

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC push_options
#pragma GCC target("avx2,fma,popcnt")
// (GCC's C++ front end does not redefine __AVX2__ etc. after a target pragma: own macros.)
#define DESRA_HAVE_AVX512 0
#define DESRA_HAVE_AVX2 1
#define DESRA_VBYTES 32
#define DESRA_ISA avx2
#define DESRA_ISA_NAME "avx2"
#define DESRA_ISA_TABLE kKernelsAvx2
#include "kernels_isa.inc"
#pragma GCC pop_options
#endif
