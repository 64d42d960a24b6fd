// Separable square erosion/dilation on bit-packed rows, O(pixels) for any radius.
//
// Horizontal pass, 64 pixels per word op, in radius-growing steps: with g_a the op (AND for
// erosion, OR for dilation) over [x-a, x+a], g_{a+b}(x) = g_a(x-b) op g_a(x) op g_a(x+b) for any
// b <= 2a+1 (the three windows overlap or touch), so the radius goes 0 -> 1 -> 4 -> 13 -> ...
// (capped at r): r = 2 takes 2 steps, r = 6 takes 3, r < 64 at most 4, and with r clamped to w-1
// the count stays bounded. Each step is one vectorisable loop over a tile of rows, each row
// laid out as [pad | row words | pad]. The pads make "outside never erodes/dilates" exact: pad
// words farther than r bits from the row hold the identity (1 for AND, 0 for OR) and are reset
// after each step; pad words within r bits are computed like row words, because a step reads
// g_a up to b bits outside the row and g_a is not the identity there.
//
// Vertical pass: van Herk / Gil-Werman on whole rows of words: the column padded with r identity
// rows on each side is cut into blocks of L = 2r+1 rows; suffix ops S inside a block and a
// running prefix op P over the next block give window(i) = S[i] op P[i+L-1]: 3 row ops per
// output row for any r, each a vectorised loop over the row's words.
#include "desra/morphology_cpu.h"

#include <algorithm>
#include <vector>

#include "desra/parallel.h"

namespace desra {
namespace {

template <bool IsAnd>
inline uint64_t op(uint64_t a, uint64_t b) {
  return IsAnd ? (a & b) : (a | b);
}

// d = a op b over n words (rows of different buffers: no aliasing, vectorised).
template <bool IsAnd>
inline void row_op(const uint64_t* __restrict a, const uint64_t* __restrict b, uint64_t* __restrict d,
                   int64_t n) {
  for (int64_t c = 0; c < n; ++c) d[c] = op<IsAnd>(a[c], b[c]);
}

// dst[j] = src[j] op src(bits shifted by +b) op src(bits shifted by -b) for j in [0, n); src must
// be readable at j +- (b/64 + 1).
template <bool IsAnd>
void step3(const uint64_t* __restrict src, uint64_t* __restrict dst, int64_t n, int64_t b) {
  const int64_t q = b >> 6;
  const int t = static_cast<int>(b & 63);
  if (t == 0) {
    for (int64_t j = 0; j < n; ++j) dst[j] = op<IsAnd>(op<IsAnd>(src[j], src[j + q]), src[j - q]);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t right = (src[j + q] >> t) | (src[j + q + 1] << (64 - t));  // pixel x + b
    const uint64_t left = (src[j - q] << t) | (src[j - q - 1] >> (64 - t));   // pixel x - b
    dst[j] = op<IsAnd>(op<IsAnd>(src[j], right), left);
  }
}

template <bool IsAnd>
void horizontal(const BitImage& in, BitImage& out, int64_t r) {
  const int64_t h = in.h, w = in.w, nw = in.nw;
  r = std::min(r, w - 1);  // the clipped window already spans the whole row
  if (r <= 0) {
    out.copy_from(in);
    return;
  }
  const uint64_t fill = IsAnd ? ~uint64_t{0} : 0;
  const uint64_t last = in.last_mask();
  // Pad words per side: `near` words hold positions within r bits of the row (computed); words
  // beyond are identity. A step with shift b <= r reads b/64 + 1 words beyond a computed word,
  // so pad = near + r/64 + 1 keeps every read inside the row's own pads.
  const int64_t near = (r + 63) / 64;
  const int64_t pad = near + r / 64 + 1;
  const int64_t stride = nw + 2 * pad;
  std::vector<int64_t> steps;  // shifts b of the radius-growing steps
  for (int64_t a = 0; a < r;) {
    const int64_t b = std::min(2 * a + 1, r - a);
    steps.push_back(b);
    a += b;
  }
  // Tiles of rows small enough to stay in L1/L2 (~32 K pixels).
  const int64_t tile = std::max<int64_t>(1, (int64_t{1} << 15) / (stride * 64));
  parallel_for(h, rows_grain(w), [&](int64_t y0, int64_t y1) {
    const int64_t rows = std::min(tile, y1 - y0);
    // One extra pad before the first and after the last row so that reads stay in the buffer.
    const int64_t total = rows * stride + 2 * pad;
    std::vector<uint64_t> A(static_cast<size_t>(total)), B(static_cast<size_t>(total));
    for (int64_t t0 = y0; t0 < y1; t0 += tile) {
      const int64_t n = std::min(tile, y1 - t0);
      uint64_t* a = A.data();
      uint64_t* b = B.data();
      std::fill(a, a + total, fill);
      for (int64_t i = 0; i < n; ++i) {
        uint64_t* seg = a + pad + i * stride + pad;
        std::copy(in.row(t0 + i), in.row(t0 + i) + nw, seg);
        if (IsAnd) seg[nw - 1] |= ~last;  // bits past w are outside: identity
      }
      std::fill(b, b + total, fill);
      for (int64_t s : steps) {
        step3<IsAnd>(a + pad, b + pad, n * stride, s);
        // Reset the far pad words (identity by definition; the step mixed rows into them).
        for (int64_t i = 0; i < n; ++i) {
          uint64_t* seg = b + pad + i * stride;
          std::fill(seg, seg + (pad - near), fill);
          std::fill(seg + pad + nw + near, seg + stride, fill);
        }
        std::swap(a, b);
      }
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t* seg = a + pad + i * stride + pad;
        uint64_t* o = out.row(t0 + i);
        std::copy(seg, seg + nw, o);
        o[nw - 1] &= last;
      }
    }
  });
}

template <bool IsAnd>
void vertical(const BitImage& in, BitImage& out, int64_t r) {
  const int64_t h = in.h, nw = in.nw;
  r = std::min(r, h - 1);
  if (r <= 0) {
    out.copy_from(in);
    return;
  }
  const int64_t len = 2 * r + 1;
  const uint64_t fill = IsAnd ? ~uint64_t{0} : 0;
  const std::vector<uint64_t> fill_row(static_cast<size_t>(nw), fill);
  // Padded row p is image row p - r; the window of output row y is padded rows [y, y + len).
  auto padded = [&](int64_t p) -> const uint64_t* {
    const int64_t y = p - r;
    return (y >= 0 && y < h) ? in.row(y) : fill_row.data();
  };
  parallel_for(h, rows_grain(in.w), [&](int64_t y0, int64_t y1) {
    std::vector<uint64_t> S(static_cast<size_t>(len * nw)), P(static_cast<size_t>(nw)), P2(P);
    for (int64_t s = (y0 / len) * len; s < y1; s += len) {  // block [s, s + len) of window starts
      // Suffixes S[i - s] = op over padded [i, s + len), i from the block's end down.
      std::copy(padded(s + len - 1), padded(s + len - 1) + nw, &S[(len - 1) * nw]);
      for (int64_t i = s + len - 2; i >= s; --i) {
        row_op<IsAnd>(padded(i), &S[(i - s + 1) * nw], &S[(i - s) * nw], nw);
      }
      if (s >= y0) std::copy(&S[0], &S[0] + nw, out.row(s));  // window == the whole block
      // Prefixes over the next block: P = op over padded [s + len, j]; window i = j - len + 1.
      std::copy(padded(s + len), padded(s + len) + nw, P.begin());
      for (int64_t i = s + 1; i < std::min(s + len, y1); ++i) {
        const int64_t j = i + len - 1;
        if (j > s + len) row_op<IsAnd>(P.data(), padded(j), P2.data(), nw), std::swap(P, P2);
        if (i >= y0) row_op<IsAnd>(&S[(i - s) * nw], P.data(), out.row(i), nw);
      }
    }
  });
}

template <bool IsAnd>
void square(const BitImage& in, BitImage& out, int64_t radius, BitImage& tmp) {
  out.reset(in.h, in.w);
  if (in.h == 0 || in.w == 0) return;
  tmp.reset(in.h, in.w);
  horizontal<IsAnd>(in, tmp, radius);
  vertical<IsAnd>(tmp, out, radius);
}

}  // namespace

void erode_bits(const BitImage& in, BitImage& out, int64_t radius, BitImage& scratch) {
  square<true>(in, out, radius, scratch);
}
void dilate_bits(const BitImage& in, BitImage& out, int64_t radius, BitImage& scratch) {
  square<false>(in, out, radius, scratch);
}

}  // namespace desra
