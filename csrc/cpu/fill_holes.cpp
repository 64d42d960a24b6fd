// Hole filling by labelling background runs: every 8-connected background component that has a
// run in the first or last row, or one starting at column 0 or ending at column w, touches the
// border (scipy propagates from a border of ones through a 3x3 structure, so any background
// pixel on the image edge is reached); every other background component is a hole.
#include "desra/fill_holes_cpu.h"

#include <vector>

#include "desra/parallel.h"
#include "desra/run_labels_cpu.h"

namespace desra {

void fill_holes_bits(const BitImage& in, BitImage& out) {
  out.reset(in.h, in.w);
  if (in.h == 0 || in.w == 0) return;
  out.words = in.words;
  if (in.h <= 2 || in.w <= 2) return;  // every background pixel lies on the border
  const int64_t h = in.h, w = in.w;
  RunForest f;
  std::vector<uint8_t> border;  // per run; meaningful at roots after pass 1
  label_runs<false>(
      in, f,
      [&](int64_t y, int64_t x0, int64_t x1) {
        border.push_back(static_cast<uint8_t>(y == 0 || y == h - 1 || x0 == 0 || x1 == w));
      },
      [&](int32_t root, int32_t gone) { border[root] |= border[gone]; });
  f.flatten();
  parallel_for(h - 2, rows_grain(w), [&](int64_t b, int64_t e) {
    for (int64_t y = b + 1; y < e + 1; ++y) {  // rows 0 and h-1 hold no hole
      int64_t id = f.row_start[y];
      uint64_t* o = out.row(y);
      for_each_run<false>(in.row(y), in.nw, w, [&](int64_t x0, int64_t x1) {
        if (!border[f.parent[id]]) set_bit_range(o, x0, x1);
        ++id;
      });
    }
  });
}

}  // namespace desra
