// Everything the per-ISA kernel files (kernels_*.cpp) use, included BEFORE they switch the
// target: inline functions and templates defined in these headers (the standard library's, the
// shared desra ones) are then compiled for the module's baseline target wherever they are
// emitted, so the linker can never hand an AVX copy of one of them to baseline code. Only the
// code of dmap_kernels.inc / bitmask_kernels.inc, inside namespace desra::<isa>, is compiled for
// the ISA; those files test DESRA_HAVE_AVX512 / DESRA_HAVE_AVX2 (set by each kernels_*.cpp) to
// pick intrinsic bodies, never __AVX512F__ & co.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

#include "desra/aligned_vector.h"
#include "desra/cpu_isa.h"
#include "desra/dmap_cpu.h"
#include "desra/dmap_math.h"
#include "desra/hd.h"
#include "desra/parallel.h"

// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized (its _mm512_cvtpd_ps uses an undefined
// vector as pass-through); the warning is about the header, not these files.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
