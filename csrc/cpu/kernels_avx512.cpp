// The dispatched CPU kernels compiled for AVX-512 (F, BW, VL) + AVX2 + FMA (x86-64 only). Chosen at
// run time when cpuid reports these (and the OS saves zmm state): desra/cpu_isa.h.
#include "kernels_prelude.h"

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,popcnt,bmi,bmi2")
// GCC tunes for 256-bit vectors by default; the auto-vectorized loops (conversions, channel mean)
// run faster with zmm registers. No result changes (no reassociation, no fast-math).
#pragma GCC target("prefer-vector-width=512")
// (GCC's C++ front end does not redefine __AVX512F__ etc. after a target pragma: own macros.)
#define DESRA_HAVE_AVX512 1
#define DESRA_HAVE_AVX2 1
#define DESRA_VBYTES 64
#define DESRA_ISA avx512
#define DESRA_ISA_NAME "avx512"
#define DESRA_ISA_TABLE kKernelsAvx512
#include "kernels_isa.inc"
#pragma GCC pop_options
#endif
