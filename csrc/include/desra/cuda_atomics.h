// Atomics shim for the __host__ __device__ kernel bodies (desra/postprocess_kernels.h).
//
// On the device these are the CUDA atomics; on the host (the CPU emulator) they are GCC __atomic
// builtins, so the emulator performs the same read-modify-write operations the GPU does, in the
// order the emulator's scheduler interleaves them. Loads of union-find parents go through
// `load_relaxed`: on the device a volatile load, so that a value another block wrote is re-read
// from L2 instead of a stale register/L1 copy (parents only ever decrease, so a stale value is
// still a valid ancestor -- staleness costs iterations, never correctness).
#pragma once

#include <cstdint>

#include "desra/hd.h"

namespace desra {
namespace gpu {

DESRA_HD int32_t load_relaxed(const int32_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const volatile int32_t*>(p);
#else
  return __atomic_load_n(p, __ATOMIC_RELAXED);
#endif
}

DESRA_HD void store_relaxed(int32_t* p, int32_t v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<volatile int32_t*>(p) = v;
#else
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
#endif
}

// Returns the old value, like CUDA's atomicMin.
DESRA_HD int32_t atomic_min(int32_t* p, int32_t v) {
#if defined(__CUDA_ARCH__)
  return atomicMin(reinterpret_cast<int*>(p), static_cast<int>(v));
#else
  int32_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
#endif
}

DESRA_HD int32_t atomic_add(int32_t* p, int32_t v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(reinterpret_cast<int*>(p), static_cast<int>(v));
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

DESRA_HD unsigned long long atomic_add(unsigned long long* p, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
#endif
}

}  // namespace gpu
}  // namespace desra
