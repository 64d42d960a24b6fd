// Separable square erosion/dilation on bit-packed rows, O(pixels) for any radius.
//
// Horizontal pass (per row, 64 pixels per word op): the AND (erosion) / OR (dilation) over a
// window of L = 2r+1 bits is built by doubling, g_2k(x) = g_k(x) op g_k(x + k), and closed with
// one overlapping combine g_k(x) op g_k(x + L - k); that is ceil(log2 L) funnel-shift passes
// over the row's words, i.e. at most 7 word ops per 64 pixels for r < 64, and (radius clamped
// to w-1) bounded for any r. The row is copied into a buffer with guard words filled with the
// operation's identity (1 for AND, 0 for OR), which is exactly "outside never erodes/dilates".
//
// Vertical pass: van Herk / Gil-Werman over whole words: the padded column (r identity rows
// above and below) is cut into blocks of L rows; suffix ops inside a block (S) and a running
// prefix op (P) give window(y) = S[y] op P[y + L - 1] in 3 word ops per 64 pixels, for any r.
// It runs over column strips of <= 8 words (one cache line per row) in parallel.
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

// 64 bits of buf starting at bit position p (p >= 0, buf long enough).
inline uint64_t fetch_bits(const uint64_t* buf, int64_t p) {
  const int64_t q = p >> 6;
  const int t = static_cast<int>(p & 63);
  return t ? (buf[q] >> t) | (buf[q + 1] << (64 - t)) : buf[q];
}

// buf[j] = buf[j] op (bits of buf starting at 64 j + s) for j in [0, n). In place: word j reads
// only words >= j, which are not yet overwritten when j ascends.
template <bool IsAnd>
void combine_shifted(uint64_t* buf, int64_t n, int64_t s) {
  const int64_t q = s >> 6;
  const int t = static_cast<int>(s & 63);
  if (t == 0) {
    for (int64_t j = 0; j < n; ++j) buf[j] = op<IsAnd>(buf[j], buf[j + q]);
  } else {
    for (int64_t j = 0; j < n; ++j)
      buf[j] = op<IsAnd>(buf[j], (buf[j + q] >> t) | (buf[j + q + 1] << (64 - t)));
  }
}

template <bool IsAnd>
void horizontal(const BitImage& in, BitImage& out, int64_t r) {
  const int64_t h = in.h, w = in.w, nw = in.nw;
  r = std::min(r, w - 1);  // the clipped window already spans the whole row
  if (r <= 0) {
    out.words = in.words;
    return;
  }
  const int64_t len = 2 * r + 1;
  // Guard words on each side: combines read up to len-1 bits (< 64*(r/32+1)) to the right
  // and the final centring reads r bits to the left.
  const int64_t guard = r / 32 + 2;
  const int64_t total = nw + 2 * guard;
  const uint64_t fill = IsAnd ? ~uint64_t{0} : 0;
  const uint64_t pad = ~in.last_mask();  // bits past w: set to the identity for the pass
  parallel_for(h, rows_grain(w), [&](int64_t y0, int64_t y1) {
    std::vector<uint64_t> buf(static_cast<size_t>(total));
    for (int64_t y = y0; y < y1; ++y) {
      std::fill(buf.begin(), buf.begin() + guard, fill);
      std::copy(in.row(y), in.row(y) + nw, buf.begin() + guard);
      if (IsAnd) buf[guard + nw - 1] |= pad;
      std::fill(buf.begin() + guard + nw, buf.end(), fill);
      // Forward window: afterwards bit p of buf = op over original bits [p, p + len).
      // Words >= total - guard + 1 are left as they are: they lie in the right guard where the
      // true value is the identity anyway (all their window is outside the row).
      int64_t k = 1;
      for (; 2 * k <= len; k *= 2) combine_shifted<IsAnd>(buf.data(), total - guard + 1, k);
      if (len > k) combine_shifted<IsAnd>(buf.data(), total - guard + 1, len - k);
      // Centre: out bit x = window starting at x - r.
      uint64_t* o = out.row(y);
      for (int64_t j = 0; j < nw; ++j) o[j] = fetch_bits(buf.data(), 64 * (guard + j) - r);
      o[nw - 1] &= in.last_mask();
    }
  });
}

template <bool IsAnd>
void vertical(const BitImage& in, BitImage& out, int64_t r) {
  const int64_t h = in.h, nw = in.nw;
  r = std::min(r, h - 1);
  if (r <= 0) {
    out.words = in.words;
    return;
  }
  const int64_t len = 2 * r + 1;
  const int64_t hp = h + 2 * r;  // padded rows: padded row i is image row i - r
  const uint64_t fill = IsAnd ? ~uint64_t{0} : 0;
  // Strips of at most 8 words (a cache line per row); narrower when there are few words so
  // that both threads get work.
  const int64_t threads = num_threads();
  const int64_t strip = std::max<int64_t>(1, std::min<int64_t>(8, nw / std::max<int64_t>(1, threads)));
  const int64_t nstrips = (nw + strip - 1) / strip;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, h * strip * 64));
  parallel_for(nstrips, grain, [&](int64_t s0, int64_t s1) {
    std::vector<uint64_t> suffix(static_cast<size_t>(h * strip));  // S for window starts 0..h-1
    std::vector<uint64_t> prefix(static_cast<size_t>(strip));
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t c0 = s * strip, cw = std::min(strip, nw - c0);
      auto padded = [&](int64_t i, int64_t c) -> uint64_t {
        const int64_t y = i - r;
        return (y >= 0 && y < h) ? in.row(y)[c0 + c] : fill;
      };
      // S[i] = op over padded [i, end of i's block); only i < h is needed, but the recursion
      // starts at the end of the block holding h-1.
      const int64_t top = std::min(hp, (((h - 1) / len) + 1) * len);
      for (int64_t c = 0; c < cw; ++c) prefix[c] = fill;  // scratch: suffix of rows >= h
      for (int64_t i = top - 1; i >= 0; --i) {
        const bool block_end = (i + 1) % len == 0;
        for (int64_t c = 0; c < cw; ++c) {
          uint64_t v = padded(i, c);
          if (!block_end) v = op<IsAnd>(v, prefix[c]);
          prefix[c] = v;
          if (i < h) suffix[i * strip + c] = v;
        }
      }
      // Running prefix P[j] over padded j from its block start; window(y) ends at j = y+len-1.
      for (int64_t j = 0; j < hp; ++j) {
        const bool block_start = j % len == 0;
        const int64_t y = j - (len - 1);
        for (int64_t c = 0; c < cw; ++c) {
          const uint64_t v = padded(j, c);
          prefix[c] = block_start ? v : op<IsAnd>(prefix[c], v);
          if (y >= 0) out.row(y)[c0 + c] = (y % len == 0) ? prefix[c] : op<IsAnd>(suffix[y * strip + c], prefix[c]);
        }
      }
    }
  });
}

template <bool IsAnd>
void square(const BitImage& in, BitImage& out, int64_t radius) {
  out.reset(in.h, in.w);
  if (in.h == 0 || in.w == 0) return;
  BitImage tmp(in.h, in.w);
  horizontal<IsAnd>(in, tmp, radius);
  vertical<IsAnd>(tmp, out, radius);
}

}  // namespace

void erode_bits(const BitImage& in, BitImage& out, int64_t radius) { square<true>(in, out, radius); }
void dilate_bits(const BitImage& in, BitImage& out, int64_t radius) { square<false>(in, out, radius); }

}  // namespace desra
