// std::vector storage aligned to a cache line, for the kernels' scratch rows.
// Why: malloc aligns to 16 bytes, so from one process to the next a scratch row started at any
// 16-byte offset of a 64-byte line, and with it every vector load of that row was split across
// two lines or not; the AVX2 D map's speed moved by up to ~10 % between identical runs.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace desra {

constexpr std::size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kCacheLine)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(kCacheLine)); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept { return false; }
};

// A vector whose data() is 64-byte aligned.
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace desra
