// desra_fast._C post-processing entry points (CPU): erode, dilate, fill_holes,
// filter_components and the fused postprocess. Validation and batching live here; the
// algorithms live in morphology.cpp, fill_holes.cpp, components.cpp (bit-packed, see
// bitmask_cpu.h).
//
// Masks: 3-D (N, h, w) uint8 or bool arrays, any strides; any nonzero byte counts as 1.
// Outputs are fresh C-contiguous uint8 0/1 arrays, except postprocess, which writes 0/1 into
// the caller's (N, h, w) uint8/bool view `out` of any strides.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "desra/bitmask_cpu.h"
#include "desra/components_cpu.h"
#include "desra/dmap_cpu.h"
#include "desra/fill_holes_cpu.h"
#include "desra/hd.h"
#include "desra/morphology_cpu.h"
#include "desra/parallel.h"
#include "desra/run_labels_cpu.h"

namespace py = pybind11;

namespace desra {

// cpu/dmap.cpp: validates premask's arguments, asks alloc(n, hout, wout) for a C-contiguous
// output of that many bytes (called with the GIL held) and runs the pre-mask kernel into it.
// eroded_only: the caller only uses the pre-mask's 5x5 erosion (PremaskCall::eroded_only).
void premask_into(const py::array& gan, const py::array& mse, const py::object& labels,
                  const py::object& weights, double threshold, int window, double scale, bool eroded_only,
                  const std::function<PremaskOut(int64_t, int64_t, int64_t)>& alloc);

namespace {

// A validated (N, h, w) byte array: element (n, y, x) at base[n*sn + y*sy + x*sx].
struct ByteView3D {
  uint8_t* base = nullptr;
  int64_t n = 0, h = 0, w = 0;
  ptrdiff_t sn = 0, sy = 0, sx = 0;
  ByteView2D image(int64_t i) const { return ByteView2D{base + i * sn, h, w, sy, sx}; }
  // [lo, hi) byte range spanned by the elements (empty when there are none).
  std::pair<const uint8_t*, const uint8_t*> span() const {
    if (n == 0 || h == 0 || w == 0) return {base, base};
    const uint8_t* lo = base;
    const uint8_t* hi = base;
    for (auto [count, stride] : {std::pair<int64_t, ptrdiff_t>{n, sn}, {h, sy}, {w, sx}}) {
      if (stride < 0) lo += (count - 1) * stride; else hi += (count - 1) * stride;
    }
    return {lo, hi + 1};
  }
};

// The (N, h, w) byte view of array a (any strides) whose first element is at base.
ByteView3D view_of(uint8_t* base, const py::array& a) {
  ByteView3D v;
  v.base = base;
  v.n = a.shape(0);
  v.h = a.shape(1);
  v.w = a.shape(2);
  v.sn = a.strides(0);
  v.sy = a.strides(1);
  v.sx = a.strides(2);
  return v;
}

ByteView3D byte_view(const py::array& a, const char* name, bool writable) {
  if (a.ndim() != 3)
    throw py::value_error(std::string(name) + " must be a 3-D (N, h, w) array, got ndim=" +
                          std::to_string(a.ndim()));
  const char kind = a.dtype().kind();
  if (!((kind == 'u' && a.itemsize() == 1) || kind == 'b'))
    throw py::value_error(std::string(name) + " must have dtype uint8 or bool, got " +
                          std::string(py::str(a.dtype())));
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  ByteView3D v = view_of(static_cast<uint8_t*>(const_cast<void*>(a.data())), a);
  if (max_runs(v.h, v.w) > INT32_MAX)
    throw py::value_error(std::string(name) + ": image of " + std::to_string(v.h) + "x" +
                          std::to_string(v.w) + " pixels is too large (run ids are int32)");
  return v;
}

int64_t check_radius(int64_t r) {
  if (r < 0) throw py::value_error("radius must be >= 0, got " + std::to_string(r));
  return r;
}

int64_t check_area(int64_t a) {
  if (a < 0) throw py::value_error("area_threshold must be >= 0, got " + std::to_string(a));
  return a;
}

// Runs fn(i) for every image. Many or small images: one image per thread (the kernels' own
// parallel_for then runs serially inside). Few big images: one after the other, each
// parallelised over rows inside the kernels.
template <class Fn>
void for_each_image(const ByteView3D& v, Fn&& fn) {
  const int64_t threads = num_threads();
  const bool per_image = v.n >= 4 * threads || (v.n > 1 && v.h * v.w < (int64_t{1} << 18));
  if (per_image) {
    parallel_for(v.n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(i);
    });
  } else {
    for (int64_t i = 0; i < v.n; ++i) fn(i);
  }
}

py::array_t<uint8_t> new_mask(const ByteView3D& v) {
  return py::array_t<uint8_t>({v.n, v.h, v.w});
}

ByteView3D contiguous_view(py::array_t<uint8_t>& a) { return view_of(a.mutable_data(), a); }

// Per-thread bit images reused from call to call (the pool's threads live on): fresh 0.5 MB
// buffers for a 4 Mpx image would cost a page fault per 4 KB on every call. Released after an
// image whose buffers exceed kKeepWords, so a huge image does not pin its memory.
struct Scratch {
  BitImage a, b, tmp;
  static constexpr size_t kKeepWords = size_t{1} << 21;  // 16 MB per buffer (128 Mpx)
  void trim() {
    for (BitImage* x : {&a, &b, &tmp})
      if (x->words.capacity() > kKeepWords) x->words.release();
  }
};
thread_local Scratch t_scratch;

// Applies stage(i, bits in, bits out) to every image i of `mask`, into a new uint8 array.
template <class Stage>
py::array_t<uint8_t> map_images(const py::array& mask, Stage&& stage) {
  const ByteView3D in = byte_view(mask, "mask", false);
  py::array_t<uint8_t> result = new_mask(in);
  const ByteView3D out = contiguous_view(result);
  {
    py::gil_scoped_release nogil;
    for_each_image(in, [&](int64_t i) {
      Scratch& s = t_scratch;
      pack_mask(in.image(i), s.a);
      stage(i, s.a, s.b);
      unpack_mask(s.b, out.image(i));
      s.trim();
    });
  }
  return result;
}

py::array_t<uint8_t> erode(const py::array& mask, int64_t radius) {
  check_radius(radius);
  return map_images(mask, [&](int64_t, const BitImage& a, BitImage& b) { erode_bits(a, b, radius, t_scratch.tmp); });
}

py::array_t<uint8_t> dilate(const py::array& mask, int64_t radius) {
  check_radius(radius);
  return map_images(mask, [&](int64_t, const BitImage& a, BitImage& b) { dilate_bits(a, b, radius, t_scratch.tmp); });
}

py::array_t<uint8_t> fill_holes(const py::array& mask) {
  return map_images(mask, [&](int64_t, const BitImage& a, BitImage& b) { fill_holes_bits(a, b); });
}

py::tuple filter_components(const py::array& mask, int64_t area_threshold) {
  check_area(area_threshold);
  std::vector<int64_t> kept(static_cast<size_t>(mask.ndim() == 3 ? mask.shape(0) : 0));
  py::array_t<uint8_t> out = map_images(mask, [&](int64_t i, const BitImage& a, BitImage& b) {
    kept[i] = filter_components_bits(a, area_threshold, b);
  });
  py::array_t<int64_t> counts(static_cast<py::ssize_t>(kept.size()));
  std::copy(kept.begin(), kept.end(), counts.mutable_data());
  return py::make_tuple(out, counts);
}

// Runs fn(item) for items [0, n) on the pool, items claimed one at a time: the two cores are
// shared with other work, and a worker that starts late then simply finds fewer items left
// instead of holding a statically assigned half (nested calls: all items on this thread).
template <class Fn>
void for_each_item_dynamic(int64_t n, Fn&& fn) {
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(n, num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < n;) fn(k);
  });
}

// Bit images of one strip of the fused pipeline, per thread (distinct from t_scratch: the
// calling thread runs a strip while its t_scratch holds the whole-image images).
struct StripScratch {
  BitImage in, eroded, dilated, tmp;
};
thread_local StripScratch t_strip;

// The fused pipeline on one image, in three parallel regions and two labellings:
//  1. strips of rows (plus a halo of kErodeRadius + kDilateRadius = 8 rows each side, which the
//     strip's erosion and dilation need): bytes -> bits, erode, dilate, all in cache, then the
//     strip's own rows go to the dilated image D; the halo rows of a strip are computed from
//     a clipped image and thrown away (row y of the dilation depends on rows y +- 8 only);
//  2. fill holes of D into F (labelling + a parallel row pass);
//  3. label F's components, then each kept row is built in a 1-row buffer and unpacked straight
//     into the caller's view: no kept-mask image and no separate unpack pass.
// Whole-image temporaries: D and F, 1/4 byte per pixel.
// load(r0, r1, bits) puts rows [r0, r1) of the h x w pre-mask into `bits`.
template <class LoadRows>
int64_t postprocess_image(int64_t h, int64_t w, LoadRows&& load, int64_t area_threshold, const ByteView2D& dst) {
  if (h == 0 || w == 0) return 0;
  Scratch& s = t_scratch;
  BitImage &d = s.a, &filled = s.b;
  d.reset(h, w);
  constexpr int64_t kHalo = kErodeRadius + kDilateRadius;
  // Strips of ~256 rows (their bit images stay in L2; the 2 x 8 halo rows cost ~6 %), at
  // least rows_grain pixels each.
  const int64_t strip = std::max<int64_t>(256, rows_grain(w));
  for_each_item_dynamic((h + strip - 1) / strip, [&](int64_t k) {
    StripScratch& t = t_strip;
    const int64_t y0 = k * strip, y1 = std::min(h, y0 + strip);
    const int64_t r0 = std::max<int64_t>(0, y0 - kHalo), r1 = std::min(h, y1 + kHalo);
    load(r0, r1, t.in);
    erode_bits(t.in, t.eroded, kErodeRadius, t.tmp);            // 5x5 once
    dilate_bits(t.eroded, t.dilated, kDilateRadius, t.tmp);     // 5x5 three times == 13x13
    std::copy(t.dilated.row(y0 - r0), t.dilated.row(y1 - r0), d.row(y0));
  });
  fill_holes_bits(d, filled);
  const KeptComponents kept(filled, area_threshold);
  const int64_t block = std::max<int64_t>(64, rows_grain(w) / 2);
  for_each_item_dynamic((h + block - 1) / block, [&](int64_t k) {
    std::vector<uint64_t> row(static_cast<size_t>(filled.nw));
    for (int64_t y = k * block; y < std::min(h, (k + 1) * block); ++y) {
      kept.row(y, row.data());
      unpack_row(row.data(), w, dst.row(y), dst.sx);
    }
  });
  s.trim();
  StripScratch& t = t_strip;
  for (BitImage* x : {&t.in, &t.eroded, &t.dilated, &t.tmp})
    if (x->words.capacity() > Scratch::kKeepWords) x->words.release();
  return kept.count();
}

// A byte pre-mask image as the source of postprocess_image.
int64_t postprocess_image(const ByteView2D& src, int64_t area_threshold, const ByteView2D& dst) {
  auto load = [&](int64_t r0, int64_t r1, BitImage& bits) {
    pack_mask(ByteView2D{src.row(r0), r1 - r0, src.w, src.sy, src.sx}, bits);
  };
  return postprocess_image(src.h, src.w, load, area_threshold, dst);
}

// A bit-packed pre-mask image (BitImage layout at `words`, nw words per row) as the source.
int64_t postprocess_image(const uint64_t* words, int64_t h, int64_t w, int64_t nw, int64_t area_threshold,
                          const ByteView2D& dst) {
  auto load = [&](int64_t r0, int64_t r1, BitImage& bits) {
    bits.reset(r1 - r0, w);
    std::copy(words + r0 * nw, words + r1 * nw, bits.row(0));
  };
  return postprocess_image(h, w, load, area_threshold, dst);
}

// Runs image(i) (-> kept count) for every image i of `o` without the GIL. -> int64 (N,) counts.
template <class Image>
py::array_t<int64_t> postprocess_batch(const ByteView3D& o, Image&& image) {
  std::vector<int64_t> kept(static_cast<size_t>(o.n));
  {
    py::gil_scoped_release nogil;
    for_each_image(o, [&](int64_t i) { kept[i] = image(i); });
  }
  py::array_t<int64_t> counts(static_cast<py::ssize_t>(kept.size()));
  std::copy(kept.begin(), kept.end(), counts.mutable_data());
  return counts;
}

// The fused pipeline on every image of `in` into `o` (same shape, not overlapping `in`).
py::array_t<int64_t> postprocess_views(const ByteView3D& in, int64_t area_threshold, const ByteView3D& o) {
  return postprocess_batch(o, [&](int64_t i) { return postprocess_image(in.image(i), area_threshold, o.image(i)); });
}

py::array_t<int64_t> postprocess(py::array mask, int64_t area_threshold, const py::array& out) {
  check_area(area_threshold);
  ByteView3D in = byte_view(mask, "mask", false);
  const ByteView3D o = byte_view(out, "out", true);
  if (o.n != in.n || o.h != in.h || o.w != in.w)
    throw py::value_error("out must have the shape of mask (" + std::to_string(in.n) + ", " +
                          std::to_string(in.h) + ", " + std::to_string(in.w) + "), got (" +
                          std::to_string(o.n) + ", " + std::to_string(o.h) + ", " +
                          std::to_string(o.w) + ")");
  // Each image is fully packed before its output is written, but images run concurrently and
  // an overlapping `out` could be any view of `mask`: read from a private copy then.
  const auto si = in.span(), so = o.span();
  if (si.first < so.second && so.first < si.second) {
    mask = py::array(mask.attr("copy")());
    in = byte_view(mask, "mask", false);
  }
  return postprocess_views(in, area_threshold, o);
}

// The bit-packed pre-mask of the whole batch (N x hout rows of nw words), reused by the calling
// thread from call to call: a fresh buffer per call costs a page fault per 4 KB on these
// machines, whose allocator returns freed blocks of that size to the system. Released after a
// batch whose pre-mask exceeds kKeepWords.
struct PremaskBits {
  WordBuffer words;
  static constexpr size_t kKeepWords = size_t{1} << 23;  // 64 MB (a batch of 128 4-Mpx images)
  void trim() {
    if (words.capacity() > kKeepWords) words.release();
  }
};
thread_local PremaskBits t_premask;

// premask + postprocess without a byte pre-mask: the kernel writes bits, the masks go straight
// into `out`.
py::array_t<int64_t> detect(const py::array& gan, const py::array& mse, const py::object& labels,
                            const py::object& weights, double threshold, int window, double scale,
                            int64_t area_threshold, const py::array& out) {
  check_area(area_threshold);
  const ByteView3D o = byte_view(out, "out", true);
  struct Trim {  // also when premask throws (bad labels) after the buffer grew
    ~Trim() { t_premask.trim(); }
  } trim_on_exit;
  int64_t h = 0, w = 0, nw = 0;
  uint64_t* words = nullptr;
  // Only the erosion of the pre-mask reaches the masks (postprocess_image's first step).
  premask_into(gan, mse, labels, weights, threshold, window, scale, true, [&](int64_t n, int64_t hh, int64_t ww) {
    if (o.n != n || o.h != hh || o.w != ww)
      throw py::value_error("out must have the shape of the valid region (N, H-10, W-10) = (" + std::to_string(n) +
                            ", " + std::to_string(hh) + ", " + std::to_string(ww) + "), got (" +
                            std::to_string(o.n) + ", " + std::to_string(o.h) + ", " + std::to_string(o.w) + ")");
    h = hh;
    w = ww;
    nw = (w + 63) / 64;
    words = t_premask.words.resize(static_cast<size_t>(n * h * nw));
    return PremaskOut{nullptr, words, nw};
  });
  return postprocess_batch(o, [&](int64_t i) {
    return postprocess_image(words + i * h * nw, h, w, nw, area_threshold, o.image(i));
  });
}

}  // namespace

void bind_postprocess(py::module_& m) {
  m.def("erode", &erode, py::arg("mask"), py::arg("radius"),
        "Binary erosion of uint8/bool (N, h, w) masks (nonzero = 1) with a (2r+1)^2 square;\n"
        "pixels outside the image do not erode (cv2.erode's default border). -> uint8 (N, h, w) 0/1.");
  m.def("dilate", &dilate, py::arg("mask"), py::arg("radius"),
        "Binary dilation of uint8/bool (N, h, w) masks (nonzero = 1) with a (2r+1)^2 square;\n"
        "pixels outside the image do not dilate. dilate(r=6) == cv2.dilate 5x5 three times.\n"
        "-> uint8 (N, h, w) 0/1.");
  m.def("fill_holes", &fill_holes, py::arg("mask"),
        "Fill holes of uint8/bool (N, h, w) masks (nonzero = 1): background pixels not\n"
        "8-connected through background to the border become 1 (scipy binary_fill_holes with a\n"
        "3x3 structure). -> uint8 (N, h, w) 0/1.");
  m.def("filter_components", &filter_components, py::arg("mask"), py::arg("area_threshold"),
        "Keep the 8-connected components of uint8/bool (N, h, w) masks (nonzero = 1) whose\n"
        "area is > area_threshold. -> (uint8 (N, h, w) 0/1, int64 (N,) kept counts).");
  m.def("postprocess", &postprocess, py::arg("mask"), py::arg("area_threshold"), py::arg("out"),
        "Fused erode r=2 -> dilate r=6 -> fill holes -> keep components with area >\n"
        "area_threshold on uint8/bool (N, h, w) masks (nonzero = 1); writes 0/1 into `out`, a\n"
        "uint8 or bool (N, h, w) array of any strides. -> int64 (N,) kept counts per image.");
  m.def("detect", &detect, py::arg("gan"), py::arg("mse"), py::arg("labels"), py::arg("weights"),
        py::arg("threshold"), py::arg("window"), py::arg("scale"), py::arg("area_threshold"), py::arg("out"),
        "premask(gan, mse, labels, weights, threshold, window, scale) followed by\n"
        "postprocess(., area_threshold, out), without allocating the pre-mask: writes the 0/1\n"
        "masks into `out`, a uint8 or bool (N, H-10, W-10) array of any strides (written only after\n"
        "the inputs have been read). -> int64 (N,) kept counts per image.");
}

}  // namespace desra
