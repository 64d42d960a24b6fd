// Packing a byte mask into 64-pixel words and back. These two passes are the only ones that
// touch byte images in the post-processing, so they are vectorised: with AVX-512BW one
// test-into-mask instruction packs 64 pixels and one masked move unpacks them; otherwise
// SSE2 movemask (x86-64 baseline) / a 256-entry byte->8-bytes table; plain loops for any
// non-unit column stride.
#include "desra/bitmask_cpu.h"

#include <cstring>

#include "desra/parallel.h"

#if defined(__AVX512BW__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace desra {
namespace {

#if !defined(__AVX512BW__)
// kSpread[b] = the 8 bytes 0/1 of the bits of b, little-endian (byte i = bit i).
struct SpreadTable {
  uint64_t v[256];
  SpreadTable() {
    for (int b = 0; b < 256; ++b) {
      uint64_t x = 0;
      for (int i = 0; i < 8; ++i) x |= uint64_t((b >> i) & 1) << (8 * i);
      v[b] = x;
    }
  }
};
const SpreadTable kSpread;
#endif

}  // namespace

void pack_row(const uint8_t* p, ptrdiff_t sx, int64_t w, uint64_t* out) {
  const int64_t nw = (w + 63) / 64;
  if (sx != 1) {
    for (int64_t k = 0; k < nw; ++k) {
      const int64_t n = (w - 64 * k < 64) ? w - 64 * k : 64;
      const uint8_t* q = p + 64 * k * sx;
      uint64_t bits = 0;
      for (int64_t i = 0; i < n; ++i) bits |= uint64_t{q[i * sx] != 0} << i;
      out[k] = bits;
    }
    return;
  }
#if defined(__AVX512BW__)
  for (int64_t k = 0; k < nw; ++k) {
    const int64_t n = (w - 64 * k < 64) ? w - 64 * k : 64;
    const __mmask64 m = (n == 64) ? ~__mmask64{0} : ((__mmask64{1} << n) - 1);
    const __m512i v = _mm512_maskz_loadu_epi8(m, p + 64 * k);  // never reads past the row
    out[k] = _mm512_test_epi8_mask(v, v);
  }
#else
  for (int64_t k = 0; k < nw; ++k) {
    const int64_t n = (w - 64 * k < 64) ? w - 64 * k : 64;
    const uint8_t* q = p + 64 * k;
    uint64_t bits = 0;
    int64_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
      __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i));
      uint64_t nz = static_cast<uint32_t>(~_mm_movemask_epi8(_mm_cmpeq_epi8(v, zero))) & 0xFFFFu;
      bits |= nz << i;
    }
#endif
    for (; i < n; ++i) bits |= uint64_t{q[i] != 0} << i;
    out[k] = bits;
  }
#endif
}

void unpack_row(const uint64_t* in, int64_t w, uint8_t* p, ptrdiff_t sx) {
  const int64_t nw = (w + 63) / 64;
  if (sx != 1) {
    for (int64_t x = 0; x < w; ++x) p[x * sx] = static_cast<uint8_t>((in[x >> 6] >> (x & 63)) & 1);
    return;
  }
#if defined(__AVX512BW__)
  const __m512i one = _mm512_set1_epi8(1);
  for (int64_t k = 0; k < nw; ++k) {
    const int64_t n = (w - 64 * k < 64) ? w - 64 * k : 64;
    const __mmask64 m = (n == 64) ? ~__mmask64{0} : ((__mmask64{1} << n) - 1);
    _mm512_mask_storeu_epi8(p + 64 * k, m, _mm512_maskz_mov_epi8(in[k], one));
  }
#else
  for (int64_t k = 0; k < nw; ++k) {
    const int64_t n = (w - 64 * k < 64) ? w - 64 * k : 64;
    uint8_t* q = p + 64 * k;
    const uint64_t bits = in[k];
    for (int64_t i = 0; i < n; i += 8) {
      const uint64_t bytes = kSpread.v[(bits >> i) & 0xFF];
      std::memcpy(q + i, &bytes, static_cast<size_t>(n - i < 8 ? n - i : 8));
    }
  }
#endif
}

void pack_mask(const ByteView2D& src, BitImage& dst) {
  dst.reset(src.h, src.w);
  if (src.h == 0 || src.w == 0) return;
  parallel_for(src.h, rows_grain(src.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) pack_row(src.row(y), src.sx, src.w, dst.row(y));
  });
}

void unpack_mask(const BitImage& src, const ByteView2D& dst) {
  if (src.h == 0 || src.w == 0) return;
  parallel_for(src.h, rows_grain(src.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) unpack_row(src.row(y), src.w, dst.row(y), dst.sx);
  });
}

}  // namespace desra
