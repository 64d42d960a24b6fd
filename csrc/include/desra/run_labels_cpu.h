// Run-based two-pass labelling of 8-connected pixel sets on bit-packed images (CPU), shared by
// hole filling (background runs) and component filtering (foreground runs).
//
// Pass 1, O(runs): runs are numbered in raster order (a popcount pass over the words gives each
// row's first id, so payload arrays are sized up front); a run is 8-adjacent to a run of the
// previous row iff their column ranges overlap after widening by one pixel. Union-find over
// run ids links the larger root under the smaller one, so parent[i] <= i always and the root
// of a component is its first run; payloads (area, border contact) are merged at union time
// into the surviving root. Path halving keeps finds short. Big images are cut into horizontal
// strips labelled in parallel (a strip's unions stay inside its own id range, so strips never
// touch each other's parents); the strips are then stitched sequentially by linking the two
// rows at each strip boundary.
// Pass 2 (parallel over rows): runs are re-extracted from the bits in the same order, so run
// id = row_start[y] + index in row, and looked up in the flattened forest. Memory: 4 bytes of
// parent (+ the caller's payload) per run, nothing per pixel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "desra/bitmask_cpu.h"
#include "desra/parallel.h"

namespace desra {

// Calls fn(x0, x1) for every maximal run [x0, x1) of pixels equal to Value in a packed row
// (w columns, nw words, bits past w are 0).
template <bool Value, class Fn>
inline void for_each_run(const uint64_t* row, int64_t nw, int64_t w, Fn&& fn) {
  const uint64_t last = (w % 64) ? (uint64_t{1} << (w % 64)) - 1 : ~uint64_t{0};
  auto load = [&](int64_t k) -> uint64_t {
    const uint64_t v = Value ? row[k] : ~row[k];
    return k == nw - 1 ? (v & last) : v;
  };
  int64_t k = 0;
  uint64_t cur = nw > 0 ? load(0) : 0;
  for (;;) {
    while (cur == 0) {
      if (++k >= nw) return;
      cur = load(k);
    }
    const int64_t x0 = k * 64 + __builtin_ctzll(cur);
    uint64_t rest = ~cur & (~uint64_t{0} << (x0 & 63));  // non-Value bits at or after x0
    while (rest == 0) {
      if (++k >= nw) {
        fn(x0, w);
        return;
      }
      rest = ~load(k);
    }
    const int64_t x1 = k * 64 + __builtin_ctzll(rest);
    if (x1 >= w) {  // only reachable through the padding bits of the last word
      fn(x0, w);
      return;
    }
    fn(x0, x1);
    cur = load(k) & (~uint64_t{0} << (x1 & 63));
  }
}

struct RunForest {
  std::vector<int32_t> parent;        // parent[i] <= i; roots: parent[i] == i
  std::vector<int64_t> row_start;     // run ids of row y: [row_start[y], row_start[y+1])

  int32_t find(int32_t i) {
    while (parent[i] != i) {
      parent[i] = parent[parent[i]];
      i = parent[i];
    }
    return i;
  }
  // Afterwards parent[i] is the root of i (ascending order works because parent[i] <= i).
  void flatten() {
    for (size_t i = 0; i < parent.size(); ++i) parent[i] = parent[parent[i]];
  }
};

// A run of one row during pass 1.
struct RowRun {
  int64_t x0, x1;
  int32_t id;
};

// Links every run of `cur` to the 8-adjacent runs of `prev` (same colour, previous row):
// [c, d) touches [a, b) iff c <= b and d >= a. merge(root, gone) as in label_runs.
template <class Merge>
inline void link_rows(const std::vector<RowRun>& prev, const std::vector<RowRun>& cur, RunForest& f,
                      Merge&& merge) {
  size_t j = 0;
  for (const RowRun& r : cur) {
    while (j < prev.size() && prev[j].x1 < r.x0) ++j;
    for (size_t t = j; t < prev.size() && prev[t].x0 <= r.x1; ++t) {
      int32_t a = f.find(prev[t].id), b = f.find(r.id);
      if (a == b) continue;
      if (a > b) std::swap(a, b);
      f.parent[b] = a;
      merge(a, b);
    }
  }
}

// Runs of Value pixels in a packed row: run starts are Value bits whose left neighbour is not.
template <bool Value>
inline int64_t count_runs(const uint64_t* row, int64_t nw, int64_t w) {
  const uint64_t last = (w % 64) ? (uint64_t{1} << (w % 64)) - 1 : ~uint64_t{0};
  int64_t n = 0;
  uint64_t carry = 0;  // Value bit of the pixel left of the word (none left of column 0)
  for (int64_t k = 0; k < nw; ++k) {
    uint64_t v = Value ? row[k] : ~row[k];
    if (k == nw - 1) v &= last;
    // Most words start no run (a pre-mask is mostly one colour): skip the population count,
    // which is a library call in the portable (x86-64 baseline, no POPCNT) build.
    const uint64_t starts = v & ~((v << 1) | carry);
    if (starts) n += __builtin_popcountll(starts);
    carry = v >> 63;
  }
  return n;
}

// Pass 1 over the runs of Value pixels. new_run(id, y, x0, x1) is called once per run (ids in
// raster order, from several threads for disjoint ids) after `reserve(total_runs)` sized the
// caller's payload arrays; merge(root, gone) when root `gone` is linked under `root`.
template <bool Value, class Reserve, class NewRun, class Merge>
void label_runs(const BitImage& img, RunForest& f, Reserve&& reserve, NewRun&& new_run, Merge&& merge) {
  const int64_t h = img.h, nw = img.nw, w = img.w;
  f.row_start.assign(static_cast<size_t>(h + 1), 0);
  parallel_for(h, rows_grain(w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) f.row_start[y + 1] = count_runs<Value>(img.row(y), nw, w);
  });
  for (int64_t y = 0; y < h; ++y) f.row_start[y + 1] += f.row_start[y];
  const int64_t total = f.row_start[h];
  f.parent.resize(static_cast<size_t>(total));
  reserve(total);
  // Strips: one per thread, each at least ~256 K pixels (a strip costs a boundary link).
  const int64_t nstrips = std::max<int64_t>(1, std::min<int64_t>(num_threads(), h * w / (int64_t{1} << 18)));
  const int64_t step = (h + nstrips - 1) / nstrips;
  parallel_for(nstrips, 1, [&](int64_t s0, int64_t s1) {
    std::vector<RowRun> prev, cur;
    for (int64_t s = s0; s < s1; ++s) {
      prev.clear();
      for (int64_t y = s * step; y < std::min(h, (s + 1) * step); ++y) {
        cur.clear();
        int32_t id = static_cast<int32_t>(f.row_start[y]);
        for_each_run<Value>(img.row(y), nw, w, [&](int64_t x0, int64_t x1) {
          cur.push_back({x0, x1, id});
          f.parent[id] = id;
          new_run(id, y, x0, x1);
          ++id;
        });
        link_rows(prev, cur, f, merge);
        std::swap(prev, cur);
      }
    }
  });
  // Stitch: link the last row of each strip to the first row of the next.
  std::vector<RowRun> above, below;
  auto runs_of = [&](int64_t y, std::vector<RowRun>& out) {
    out.clear();
    int32_t id = static_cast<int32_t>(f.row_start[y]);
    for_each_run<Value>(img.row(y), nw, w, [&](int64_t x0, int64_t x1) { out.push_back({x0, x1, id++}); });
  };
  for (int64_t s = 1; s < nstrips; ++s) {
    const int64_t y = s * step;
    if (y >= h) break;
    runs_of(y - 1, above);
    runs_of(y, below);
    link_rows(above, below, f, merge);
  }
}

// Upper bound on the runs of one colour in an h x w image (for the int32 run ids).
inline int64_t max_runs(int64_t h, int64_t w) { return h * ((w + 1) / 2); }

}  // namespace desra
