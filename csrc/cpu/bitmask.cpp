// Packing a byte mask into 64-pixel words and back (the only post-processing passes that touch
// byte images). The row kernels are compiled once per instruction set (bitmask_kernels.inc,
// kernels_*.cpp) and reached through the dispatch table of desra/cpu_isa.h; here the whole-image
// loops, parallel over rows.
#include "desra/bitmask_cpu.h"

#include "desra/cpu_isa.h"
#include "desra/parallel.h"

namespace desra {

void pack_row(const uint8_t* p, ptrdiff_t sx, int64_t w, uint64_t* out) { cpu_kernels().pack_row(p, sx, w, out); }

void unpack_row(const uint64_t* in, int64_t w, uint8_t* p, ptrdiff_t sx) { cpu_kernels().unpack_row(in, w, p, sx); }

void pack_mask(const ByteView2D& src, BitImage& dst) {
  dst.reset(src.h, src.w);
  if (src.h == 0 || src.w == 0) return;
  const auto pack = cpu_kernels().pack_row;
  parallel_for(src.h, rows_grain(src.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) pack(src.row(y), src.sx, src.w, dst.row(y));
  });
}

void unpack_mask(const BitImage& src, const ByteView2D& dst) {
  if (src.h == 0 || src.w == 0) return;
  const auto unpack = cpu_kernels().unpack_row;
  parallel_for(src.h, rows_grain(src.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) unpack(src.row(y), src.w, dst.row(y), dst.sx);
  });
}

}  // namespace desra
