// Bodies of the CUDA post-processing kernels (csrc/cuda/postprocess_kernels.cu), written as
// __host__ __device__ functions so that the CPU emulator (csrc/cpu/emulator.cpp) runs the very
// same code over the same grid. See csrc/CUDA_DESIGN.md for the pipeline and its costs.
//
// Conventions that make the emulation faithful:
//  * A kernel body never reads blockIdx/threadIdx itself; it gets a ThreadIndex.
//  * Shared memory is a pointer the caller provides (a __shared__ array on the device, a per-block
//    buffer in the emulator).
//  * Code between two __syncthreads() is one "phase" function; the device kernel calls the phases
//    with __syncthreads() in between, the emulator runs all threads of a block through phase k
//    (in a shuffled order) before any thread starts phase k+1.
//  * Union-find work is a small per-thread state machine (`*Program` + `*_step`): one step is one
//    hop of a root walk or one atomic link. The device runs `while (!step()) {}`; the emulator picks a
//    random unfinished thread for every step, which interleaves the threads of a block (local
//    phase) or of the whole launch (global phases) the way a GPU may.
//
// Labels: int32 index of a pixel inside its image (y * w + x), per image (image n's arrays start
// at n * h * w), so only h * w < 2^31 is required. Union-find invariant: labels[p] <= p and
// labels[p] is in p's set; roots satisfy labels[r] == r; links only ever decrease (atomic_min),
// so a stale read is still an ancestor.
#pragma once

#include <cstdint>

#include "desra/cuda_atomics.h"
#include "desra/hd.h"

namespace desra {
namespace gpu {

struct Dim3i {
  int x, y, z;
};

// What a CUDA thread knows about itself: blockIdx, threadIdx, blockDim, gridDim.
struct ThreadIndex {
  Dim3i block, thread, block_dim, grid_dim;
};

// ---- geometry (shared by the .cu launcher and the emulator) --------------------------------------
// Morphology: one block makes a 64x32 tile of the dilated mask from the (64+16)x(32+16) input it
// needs (erosion radius 2 + dilation radius 6 = 8-pixel halo).
constexpr int kMorphTileW = 64;
constexpr int kMorphTileH = 32;
constexpr int kMorphThreads = 256;
constexpr int kMorphHalo = kErodeRadius + kDilateRadius;          // 8
constexpr int kMorphInW = kMorphTileW + 2 * kMorphHalo;           // 80: input columns
constexpr int kMorphInH = kMorphTileH + 2 * kMorphHalo;           // 48: input rows
constexpr int kMorphErW = kMorphTileW + 2 * kDilateRadius;        // 76: eroded columns needed
constexpr int kMorphErH = kMorphTileH + 2 * kDilateRadius;        // 44: eroded rows needed
// Buffer A holds the input, later the eroded tile; buffer B the row-eroded, later the row-dilated.
constexpr int kMorphBufA = kMorphInW * kMorphInH;                 // 3840 >= 76 * 44
constexpr int kMorphBufB = kMorphErW * kMorphInH;                 // 3648 >= 64 * 44
constexpr int kMorphSmemBytes = kMorphBufA + kMorphBufB;
static_assert(kMorphErW * kMorphErH <= kMorphBufA, "eroded tile must fit in buffer A");
static_assert(kMorphTileW * kMorphErH <= kMorphBufB, "row-dilated tile must fit in buffer B");

// Connected components: one block labels a 32x16 tile, one thread per pixel.
constexpr int kTileW = 32;
constexpr int kTileH = 16;
constexpr int kTileThreads = kTileW * kTileH;
// Local union-find slab in shared memory: slot 0 is a virtual "outside" node (background mode
// only), slot 1 + ly * kTileW + lx is pixel (lx, ly) of the tile.
constexpr int kSlabSlots = kTileThreads + 1;
// Boundary merge: one thread per pixel of the tile's bottom row and right column.
constexpr int kMergeThreads = kTileW + kTileH;
// Per-pixel kernels (fill, area, output): 1-D over the pixels of one image, grid.z = image.
constexpr int kPointThreads = 256;

enum LabelMode : int {
  kLabelBackground = 0,  // 8-connected components of mask == 0, border-touching ones joined to 0
  kLabelForeground = 1,  // 8-connected components of mask != 0
};

// Test-only fault injection (the emulator's self-test): kFaultLostUnion makes union_step give
// up after a failed link, the classic lost-update bug of naive atomicMin union-find. It is
// correct in any sequential order and wrong under interleaving, so the shuffled emulator must
// catch it (tests/test_cuda_emulator.py).
enum Fault : int { kFaultNone = 0, kFaultLostUnion = 1 };

struct PostprocessArgs {
  const uint8_t* premask;     // (n, h, w) 0/1 (nonzero = 1), contiguous
  uint8_t* mask;              // workspace (n, h, w): dilated, then filled in place
  int32_t* labels;            // workspace (n, h, w): union-find parents (per-image indices)
  int32_t* area;              // workspace (n, h, w): component area, on the root's entry
  unsigned long long* counts; // (n,): kept components per image
  uint8_t* out;               // (n, h, w) 0/1 with element strides below (bool or uint8)
  int64_t out_stride_n, out_stride_y, out_stride_x;
  int n, h, w;
  int area_threshold;         // keep components with area > area_threshold
  int fault;                  // Fault; 0 outside tests
};

DESRA_HD int64_t image_offset(const PostprocessArgs& a, int z) { return int64_t(z) * a.h * a.w; }

DESRA_HD bool in_label_set(uint8_t m, int mode) { return mode == kLabelForeground ? m != 0 : m == 0; }

// ---- union-find -------------------------------------------------------------------------------
// One hop of a walk to the root, with path halving: node's parent is replaced by its grandparent
// (atomic_min: the grandparent is a smaller node of the same set, so this is safe under any
// interleaving, also while other threads link roots). Without it, a component snaking through
// many tiles leaves chains of tile roots that every pixel would walk in full. Returns the next
// node, or `node` itself when it is a root.
DESRA_HD int32_t halving_hop(int32_t* L, int32_t node) {
  const int32_t parent = load_relaxed(L + node);
  if (parent == node) return node;
  const int32_t grand = load_relaxed(L + parent);
  if (grand != parent) atomic_min(L + node, grand);
  return grand;
}

// union(a, b) on the parent array L, the atomicMin union of Playne & Hawick used by BUF/BKE:
// walk a to its root, walk b to its root, link the larger root under the smaller with
// atomic_min. Between the walks and the link other threads may link either root; then
// atomic_min returns old != hi and may even have replaced that other thread's link hi -> old,
// so we continue with union(lo, old), which restores every union either thread completed.
// As a state machine so the emulator can interleave threads between the walks and the link:
// one step = one hop of a walk, or the link.
struct UnionState {
  int32_t a, b;
  int stage;  // 0: walking a, 1: walking b, 2: link
};

DESRA_HD UnionState union_start(int32_t a, int32_t b) { return UnionState{a, b, 0}; }

// One step; returns true when a and b are known to be in one set.
DESRA_HD bool union_step(int32_t* L, UnionState& u, int fault) {
  if (u.stage == 0) {
    const int32_t next = halving_hop(L, u.a);
    if (next != u.a) u.a = next; else u.stage = 1;
    return false;
  }
  if (u.stage == 1) {
    const int32_t next = halving_hop(L, u.b);
    if (next != u.b) u.b = next; else u.stage = 2;
    return false;
  }
  if (u.a == u.b) return true;
  const bool b_is_hi = u.a < u.b;
  const int32_t lo = b_is_hi ? u.a : u.b;
  const int32_t hi = b_is_hi ? u.b : u.a;
  const int32_t old = atomic_min(L + hi, lo);
  if (old == hi || fault == kFaultLostUnion) return true;  // the fault: forget the lost link
  u.a = lo;
  u.b = old;
  u.stage = 0;
  return false;
}

// Read-only walk to the root (no unions run concurrently where this is used).
DESRA_HD int32_t find_root(const int32_t* L, int32_t x) {
  int32_t p = load_relaxed(L + x);
  while (p != x) {
    x = p;
    p = load_relaxed(L + x);
  }
  return x;
}

// ---- kernel 1: erosion 5x5 then dilation 13x13, fused (premask -> mask) -------------------------
// Separable in shared memory: rows then columns, min for erosion, max for dilation. Border rules
// (docs/spec.md §3): pixels outside the image never erode (input outside = 1) and never dilate (eroded
// value outside = 0), i.e. both windows are clipped to the image.
DESRA_HD void morph_load(const ThreadIndex& t, const PostprocessArgs& a, uint8_t* smem) {
  const uint8_t* src = a.premask + image_offset(a, t.block.z);
  const int y0 = t.block.y * kMorphTileH - kMorphHalo, x0 = t.block.x * kMorphTileW - kMorphHalo;
  for (int i = t.thread.x; i < kMorphInW * kMorphInH; i += t.block_dim.x) {
    const int y = y0 + i / kMorphInW, x = x0 + i % kMorphInW;
    const bool inside = y >= 0 && y < a.h && x >= 0 && x < a.w;
    smem[i] = inside ? uint8_t(src[int64_t(y) * a.w + x] != 0) : uint8_t(1);
  }
}

DESRA_HD void morph_erode_rows(const ThreadIndex& t, const PostprocessArgs& a, uint8_t* smem) {
  const uint8_t* in = smem;
  uint8_t* rows = smem + kMorphBufA;
  for (int i = t.thread.x; i < kMorphErW * kMorphInH; i += t.block_dim.x) {
    const int r = i / kMorphErW, c = i % kMorphErW;
    const uint8_t* p = in + r * kMorphInW + c;
    uint8_t v = 1;
    for (int k = 0; k <= 2 * kErodeRadius; ++k) v &= p[k];
    rows[i] = v;
  }
}

DESRA_HD void morph_erode_cols(const ThreadIndex& t, const PostprocessArgs& a, uint8_t* smem) {
  const uint8_t* rows = smem + kMorphBufA;
  uint8_t* eroded = smem;  // the input is no longer needed
  const int y0 = t.block.y * kMorphTileH - kDilateRadius, x0 = t.block.x * kMorphTileW - kDilateRadius;
  for (int i = t.thread.x; i < kMorphErW * kMorphErH; i += t.block_dim.x) {
    const int r = i / kMorphErW, c = i % kMorphErW;
    const int y = y0 + r, x = x0 + c;
    uint8_t v = 0;  // outside the image: never dilates
    if (y >= 0 && y < a.h && x >= 0 && x < a.w) {
      v = 1;
      for (int k = 0; k <= 2 * kErodeRadius; ++k) v &= rows[(r + k) * kMorphErW + c];
    }
    eroded[i] = v;
  }
}

DESRA_HD void morph_dilate_rows(const ThreadIndex& t, const PostprocessArgs& a, uint8_t* smem) {
  const uint8_t* eroded = smem;
  uint8_t* rows = smem + kMorphBufA;
  for (int i = t.thread.x; i < kMorphTileW * kMorphErH; i += t.block_dim.x) {
    const int r = i / kMorphTileW, c = i % kMorphTileW;
    const uint8_t* p = eroded + r * kMorphErW + c;
    uint8_t v = 0;
    for (int k = 0; k <= 2 * kDilateRadius; ++k) v |= p[k];
    rows[i] = v;
  }
}

DESRA_HD void morph_dilate_cols_store(const ThreadIndex& t, const PostprocessArgs& a, uint8_t* smem) {
  const uint8_t* rows = smem + kMorphBufA;
  uint8_t* dst = a.mask + image_offset(a, t.block.z);
  const int y0 = t.block.y * kMorphTileH, x0 = t.block.x * kMorphTileW;
  for (int i = t.thread.x; i < kMorphTileW * kMorphTileH; i += t.block_dim.x) {
    const int r = i / kMorphTileW, c = i % kMorphTileW;
    const int y = y0 + r, x = x0 + c;
    if (y >= a.h || x >= a.w) continue;
    uint8_t v = 0;
    for (int k = 0; k <= 2 * kDilateRadius; ++k) v |= rows[(r + k) * kMorphTileW + c];
    dst[int64_t(y) * a.w + x] = v;
  }
}

// ---- kernels 2 and 5: local labelling of a 32x16 tile in shared memory --------------------------
struct TilePixel {
  int lx, ly, x, y, slot;
  bool inside;
};

DESRA_HD TilePixel tile_pixel(const ThreadIndex& t, const PostprocessArgs& a) {
  TilePixel p;
  p.lx = t.thread.x;
  p.ly = t.thread.y;
  p.x = t.block.x * kTileW + p.lx;
  p.y = t.block.y * kTileH + p.ly;
  p.slot = 1 + p.ly * kTileW + p.lx;
  p.inside = p.x < a.w && p.y < a.h;
  return p;
}

DESRA_HD bool tile_pixel_in_set(const TilePixel& p, const PostprocessArgs& a, int z, int mode) {
  return p.inside && in_label_set(a.mask[image_offset(a, z) + int64_t(p.y) * a.w + p.x], mode);
}

// Phase 1: every in-set pixel is its own root; slot 0 (virtual outside node) is a root.
// Foreground mode also zeroes the area and count accumulators of kernels 7 and 8 (no memset).
DESRA_HD void label_local_init(const ThreadIndex& t, const PostprocessArgs& a, int mode, int32_t* slab) {
  const TilePixel p = tile_pixel(t, a);
  slab[p.slot] = tile_pixel_in_set(p, a, t.block.z, mode) ? p.slot : -1;
  if (p.slot == 1) slab[0] = 0;
  if (mode == kLabelForeground) {
    if (p.inside) a.area[image_offset(a, t.block.z) + int64_t(p.y) * a.w + p.x] = 0;
    if (p.slot == 1 && t.block.x == 0 && t.block.y == 0) a.counts[t.block.z] = 0;
  }
}

// Phase 2: unite each in-set pixel with its in-set neighbours to the left, up-left, up and
// up-right inside the tile (the other four directions are covered by the neighbour's own
// unions). Background mode: pixels on the image border also unite with the virtual slot 0, so
// every border-touching background component ends up with root 0 (see label_local_store).
struct LocalUnionProgram {
  int32_t self;  // own slot, -1 when not in the set
  int next;      // next neighbour to try, 0..4
  UnionState uf; // the union in progress
  bool busy;
  TilePixel px;
};

DESRA_HD LocalUnionProgram local_union_begin(const ThreadIndex& t, const PostprocessArgs& a, int mode) {
  LocalUnionProgram u;
  u.px = tile_pixel(t, a);
  u.self = tile_pixel_in_set(u.px, a, t.block.z, mode) ? u.px.slot : -1;
  u.next = 0;
  u.uf = union_start(0, 0);
  u.busy = false;
  return u;
}

DESRA_HD bool local_union_step(LocalUnionProgram& u, const PostprocessArgs& a, int mode, int32_t* slab) {
  if (u.self < 0) return true;
  while (!u.busy) {
    if (u.next > 4) return true;
    const int k = u.next++;
    int32_t q = -1;
    if (k < 4) {
      const int dx = k == 0 ? -1 : k - 2, dy = k == 0 ? 0 : -1;  // L, UL, U, UR
      const int nx = u.px.lx + dx, ny = u.px.ly + dy;
      // A neighbour's slab entry is -1 iff it is not in the set (in-set entries only ever
      // decrease from a value >= 1), so this read is race-free in its sign.
      if (nx >= 0 && nx < kTileW && ny >= 0 && load_relaxed(slab + 1 + ny * kTileW + nx) >= 0)
        q = 1 + ny * kTileW + nx;
    } else if (mode == kLabelBackground &&
               (u.px.x == 0 || u.px.y == 0 || u.px.x == a.w - 1 || u.px.y == a.h - 1)) {
      q = 0;
    }
    if (q >= 0) {
      u.uf = union_start(u.self, q);
      u.busy = true;
    }
  }
  if (union_step(slab, u.uf, a.fault)) u.busy = false;
  return false;
}

// Phase 3: translate the tile-local root to a per-image label. Local roots are the smallest slot
// of their local component, i.e. its first pixel in raster order, so the label (the root's pixel
// index) is <= the pixel's own index as the invariant requires; slot 0 maps to label 0.
// Background mode: pixel 0 always holds label 0 (the virtual root), even when it is foreground.
DESRA_HD void label_local_store(const ThreadIndex& t, const PostprocessArgs& a, int mode, const int32_t* slab) {
  const TilePixel p = tile_pixel(t, a);
  if (!p.inside) return;
  int32_t label = -1;
  if (load_relaxed(slab + p.slot) >= 0) {
    const int32_t r = find_root(slab, p.slot);
    label = r == 0 ? 0
                   : (t.block.y * kTileH + (r - 1) / kTileW) * a.w + t.block.x * kTileW + (r - 1) % kTileW;
  } else if (mode == kLabelBackground && p.x == 0 && p.y == 0) {
    label = 0;
  }
  a.labels[image_offset(a, t.block.z) + int64_t(p.y) * a.w + p.x] = label;
}

// ---- kernels 3 and 6: merge across tile borders (global union-find) -----------------------------
// Thread i < kTileW takes pixel i of the tile's bottom row and unites it with its three
// neighbours in the row below; thread kTileW + j takes pixel j of the right column and unites it
// with its three neighbours in the column to the right. Together these cover every 8-adjacent
// pair of pixels in different tiles (a diagonal pair across a tile corner is reached from the
// bottom row of the tile above it).
struct MergeProgram {
  int32_t self;  // pixel index in the image, -1 when idle
  int x, y;
  bool right;    // right-column thread (else bottom-row thread)
  int next;      // next neighbour 0..2
  UnionState uf;
  bool busy;
  int z;
};

DESRA_HD MergeProgram merge_begin(const ThreadIndex& t, const PostprocessArgs& a, int mode) {
  MergeProgram u;
  const int i = t.thread.x;
  u.right = i >= kTileW;
  u.x = t.block.x * kTileW + (u.right ? kTileW - 1 : i);
  u.y = t.block.y * kTileH + (u.right ? i - kTileW : kTileH - 1);
  u.z = t.block.z;
  u.next = 0;
  u.uf = union_start(0, 0);
  u.busy = false;
  const bool inside = u.x < a.w && u.y < a.h;
  u.self = inside && in_label_set(a.mask[image_offset(a, u.z) + int64_t(u.y) * a.w + u.x], mode)
               ? u.y * a.w + u.x
               : -1;
  return u;
}

DESRA_HD bool merge_step(MergeProgram& u, const PostprocessArgs& a, int mode) {
  if (u.self < 0) return true;
  const int64_t img = image_offset(a, u.z);
  while (!u.busy) {
    if (u.next > 2) return true;
    const int k = u.next++;
    const int nx = u.right ? u.x + 1 : u.x - 1 + k;
    const int ny = u.right ? u.y - 1 + k : u.y + 1;
    if (nx >= 0 && nx < a.w && ny >= 0 && ny < a.h && in_label_set(a.mask[img + int64_t(ny) * a.w + nx], mode)) {
      u.uf = union_start(u.self, ny * a.w + nx);
      u.busy = true;
    }
  }
  if (union_step(a.labels + img, u.uf, a.fault)) u.busy = false;
  return false;
}

// ---- kernels 4 and 7: per-pixel walks to the root ----------------------------------------------
struct FindProgram {
  int32_t p;     // pixel index in the image, -1 when idle
  int32_t node;  // current node of the walk
  int z;
};

DESRA_HD int32_t point_pixel(const ThreadIndex& t, const PostprocessArgs& a) {
  const int64_t p = int64_t(t.block.x) * t.block_dim.x + t.thread.x;
  return p < int64_t(a.h) * a.w ? int32_t(p) : -1;
}

// Kernels 4 and 7 walk every pixel of one kind (background / foreground) to its root.
DESRA_HD FindProgram find_begin(const ThreadIndex& t, const PostprocessArgs& a, bool foreground) {
  FindProgram f;
  f.z = t.block.z;
  f.p = point_pixel(t, a);
  if (f.p >= 0 && (a.mask[image_offset(a, f.z) + f.p] != 0) != foreground) f.p = -1;
  f.node = f.p;
  return f;
}

// One hop of the walk (with path halving); true once f.node is the root.
DESRA_HD bool find_hop(FindProgram& f, int32_t* labels) {
  const int32_t next = halving_hop(labels, f.node);
  if (next == f.node) return true;
  f.node = next;
  return false;
}

// Kernel 4, hole filling (walks compress the background forest as they go): a background pixel whose root is not the virtual border root 0 lies in
// a background component that touches no border, i.e. a hole: it becomes foreground. Written in
// place: this kernel reads only labels, and each pixel's mask byte only by its own thread.
DESRA_HD FindProgram fill_begin(const ThreadIndex& t, const PostprocessArgs& a) {
  return find_begin(t, a, /*foreground=*/false);
}

DESRA_HD bool fill_step(FindProgram& f, const PostprocessArgs& a) {
  if (f.p < 0) return true;
  const int64_t img = image_offset(a, f.z);
  if (!find_hop(f, a.labels + img)) return false;
  if (f.node != 0) a.mask[img + f.p] = 1;
  return true;
}

// Kernel 7, areas: each foreground pixel finds its root, stores it as its label (so kernel 8
// needs no walk; concurrent walks through this pixel read either the old parent or the root,
// both ancestors) and adds 1 to the root's area.
DESRA_HD FindProgram area_begin(const ThreadIndex& t, const PostprocessArgs& a) {
  return find_begin(t, a, /*foreground=*/true);
}

DESRA_HD bool area_step(FindProgram& f, const PostprocessArgs& a) {
  if (f.p < 0) return true;
  const int64_t img = image_offset(a, f.z);
  if (!find_hop(f, a.labels + img)) return false;
  store_relaxed(a.labels + img + f.p, f.node);
  atomic_add(a.area + img + f.node, 1);
  return true;
}

// ---- kernel 8: area filter and output ----------------------------------------------------------
DESRA_HD void output_pixel(const ThreadIndex& t, const PostprocessArgs& a) {
  const int32_t p = point_pixel(t, a);
  if (p < 0) return;
  const int z = t.block.z;
  const int64_t img = image_offset(a, z);
  bool keep = false;
  if (a.mask[img + p] != 0) {
    const int32_t root = a.labels[img + p];
    keep = a.area[img + root] > a.area_threshold;
    if (keep && root == p) atomic_add(a.counts + z, 1ull);
  }
  const int y = p / a.w, x = p % a.w;
  a.out[z * a.out_stride_n + y * a.out_stride_y + x * a.out_stride_x] = keep ? 1 : 0;
}

// ---- launch geometry ---------------------------------------------------------------------------
struct LaunchDims {
  Dim3i grid, block;
};

inline int ceil_div(int64_t a, int64_t b) { return int((a + b - 1) / b); }

inline LaunchDims morph_dims(int n, int h, int w) {
  return {{ceil_div(w, kMorphTileW), ceil_div(h, kMorphTileH), n}, {kMorphThreads, 1, 1}};
}
inline LaunchDims local_dims(int n, int h, int w) {
  return {{ceil_div(w, kTileW), ceil_div(h, kTileH), n}, {kTileW, kTileH, 1}};
}
inline LaunchDims merge_dims(int n, int h, int w) {
  return {{ceil_div(w, kTileW), ceil_div(h, kTileH), n}, {kMergeThreads, 1, 1}};
}
inline LaunchDims point_dims(int n, int h, int w) {
  return {{ceil_div(int64_t(h) * w, kPointThreads), 1, n}, {kPointThreads, 1, 1}};
}

// Workspace layout (bytes from a 256-aligned base): mask | labels | area | counts scratch.
struct WorkspaceLayout {
  int64_t mask, labels, area, counts, total;
};

inline int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

inline WorkspaceLayout workspace_layout(int n, int h, int w) {
  const int64_t px = int64_t(n) * h * w;
  WorkspaceLayout l;
  l.mask = 0;
  l.labels = align_up(l.mask + px, 256);
  l.area = align_up(l.labels + 4 * px, 256);
  l.counts = align_up(l.area + 4 * px, 256);
  l.total = align_up(l.counts + 8 * int64_t(n), 256);
  return l;
}

}  // namespace gpu
}  // namespace desra
