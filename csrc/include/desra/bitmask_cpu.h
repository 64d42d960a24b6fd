// Bit-packed binary images for the CPU post-processing (erosion, dilation, hole filling,
// component filtering). 64 pixels per 64-bit word: a 4 Mpx mask is 512 KB, so every
// intermediate stays in L2 and the byte images are touched only twice (pack in, unpack out).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace desra {

// Uninitialised word storage that keeps its capacity (the fused pipeline reuses two images for
// all stages; every stage writes every word, so zero-filling would be a wasted pass).
class WordBuffer {
 public:
  uint64_t* resize(size_t n) {
    if (n > cap_) {
      data_.reset(new uint64_t[n]);
      cap_ = n;
    }
    size_ = n;
    return data_.get();
  }
  uint64_t* data() { return data_.get(); }
  const uint64_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  void release() {
    data_.reset();
    size_ = cap_ = 0;
  }

 private:
  std::unique_ptr<uint64_t[]> data_;
  size_t size_ = 0, cap_ = 0;
};

// Binary image, LSB first: pixel (y, x) is bit x % 64 of words[y * nw + x / 64].
// Invariant: the bits past column w in a row's last word are 0 (run scanning relies on it).
struct BitImage {
  int64_t h = 0, w = 0, nw = 0;  // rows, columns, words per row
  WordBuffer words;

  BitImage() = default;
  BitImage(int64_t rows, int64_t cols) { reset(rows, cols); }
  // New shape; contents undefined until written.
  void reset(int64_t rows, int64_t cols) {
    h = rows;
    w = cols;
    nw = (cols + 63) / 64;
    words.resize(static_cast<size_t>(h * nw));
  }
  void copy_from(const BitImage& o) {
    reset(o.h, o.w);
    std::copy(o.words.data(), o.words.data() + o.words.size(), words.data());
  }
  uint64_t* row(int64_t y) { return words.data() + y * nw; }
  const uint64_t* row(int64_t y) const { return words.data() + y * nw; }
  // Valid bits of a row's last word.
  uint64_t last_mask() const { return (w % 64) ? (uint64_t{1} << (w % 64)) - 1 : ~uint64_t{0}; }
};

// A strided 2-D byte image (numpy uint8 or bool): element (y, x) at base[y * sy + x * sx].
// Strides are in bytes and may be negative or non-contiguous (e.g. the interior view
// full[:, 5:-5, 5:-5] of the caller's output).
struct ByteView2D {
  uint8_t* base = nullptr;
  int64_t h = 0, w = 0;
  ptrdiff_t sy = 0, sx = 0;
  uint8_t* row(int64_t y) const { return base + y * sy; }
};

// One row: w bytes at p (column stride sx) -> ceil(w/64) words; nonzero is foreground.
void pack_row(const uint8_t* p, ptrdiff_t sx, int64_t w, uint64_t* out);
// One row of bits -> w bytes 0/1 at p (column stride sx), nothing written past the row.
void unpack_row(const uint64_t* in, int64_t w, uint8_t* p, ptrdiff_t sx);

// src -> dst (dst is reset to src's shape). Any nonzero byte is foreground. Parallel over rows.
void pack_mask(const ByteView2D& src, BitImage& dst);
// Writes 0/1 into every element of dst (same shape as src), nothing outside it: the tail of a
// row is written with masked stores so the frame around an interior view stays untouched.
void unpack_mask(const BitImage& src, const ByteView2D& dst);

// Sets bits [x0, x1) of a packed row.
inline void set_bit_range(uint64_t* row, int64_t x0, int64_t x1) {
  if (x0 >= x1) return;
  int64_t k0 = x0 >> 6, k1 = (x1 - 1) >> 6;
  uint64_t m0 = ~uint64_t{0} << (x0 & 63);
  uint64_t m1 = ~uint64_t{0} >> (63 - ((x1 - 1) & 63));
  if (k0 == k1) {
    row[k0] |= m0 & m1;
    return;
  }
  row[k0] |= m0;
  for (int64_t k = k0 + 1; k < k1; ++k) row[k] = ~uint64_t{0};
  row[k1] |= m1;
}

// Rows per parallel chunk so that a chunk holds at least ~64 K pixels (thread hand-off costs
// ~10-20 us; smaller chunks would not pay for it).
inline int64_t rows_grain(int64_t w) {
  int64_t g = (int64_t{1} << 16) / (w > 0 ? w : 1);
  return g > 0 ? g : 1;
}

}  // namespace desra
