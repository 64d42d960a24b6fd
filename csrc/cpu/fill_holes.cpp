// Hole filling by labelling background runs: every 8-connected background component that has a
// run in the first or last row, or one starting at column 0 or ending at column w, touches the
// border (scipy propagates from a border of ones through a 3x3 structure, so any background
// pixel on the image edge is reached); every other background component is a hole.
#include "desra/fill_holes_cpu.h"

#include <algorithm>
#include <vector>

#include "desra/parallel.h"
#include "desra/run_labels_cpu.h"

namespace desra {

void fill_holes_bits(const BitImage& in, BitImage& out) {
  if (in.h <= 2 || in.w <= 2) {  // every background pixel lies on the border
    out.copy_from(in);
    return;
  }
  out.reset(in.h, in.w);
  const int64_t h = in.h, w = in.w, nw = in.nw;
  RunForest f;
  std::vector<uint8_t> border;  // per run; meaningful at roots after pass 1
  label_runs<false>(
      in, f, [&](int64_t n) { border.resize(static_cast<size_t>(n)); },
      [&](int32_t id, int64_t y, int64_t x0, int64_t x1) {
        border[id] = static_cast<uint8_t>(y == 0 || y == h - 1 || x0 == 0 || x1 == w);
      },
      [&](int32_t root, int32_t gone) { border[root] |= border[gone]; });
  f.flatten();
  parallel_for(h, rows_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      uint64_t* o = out.row(y);
      std::copy(in.row(y), in.row(y) + nw, o);
      if (y == 0 || y == h - 1) continue;  // no hole on the border
      int64_t id = f.row_start[y];
      for_each_run<false>(in.row(y), nw, w, [&](int64_t x0, int64_t x1) {
        if (!border[f.parent[id]]) set_bit_range(o, x0, x1);
        ++id;
      });
    }
  });
}

}  // namespace desra
