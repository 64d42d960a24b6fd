"""Stage 1 of DeSRA detection as one Triton kernel: local moments -> D map (-> pre-morphology mask).

``stage1_kernel`` computes, per output tile and for every channel of both images, the windowed
mean mu and the windowed variance E[x^2] - mu^2 (11x11 Gaussian sigma 1.5 or box window, docs/spec.md
section 1; E[x^2] is never formed as such in float32, see "Exactness" below), then D = mean over
channels of D_c, accumulating in float32 and writing float32 D of shape (N, H-10, W-10). With ``FUSED_MASK`` it goes on to the label-map ->
weight lookup, the clip to [0, 1] and the ``< threshold`` test and writes the uint8 mask instead
of D. Launch functions live in ``dmap.py`` and ``premask.py``; this file holds only device code.

Tiling. One program owns an output tile of BH rows x BW columns of one image. It streams the
BH + 10 input rows of the tile top to bottom; for each input row it gathers, for both images and
every channel, the 11 horizontal taps of every output column as one [16, 2, CP, BW] load (taps
padded to 16 with weight 0, channels padded to CP = next power of two of C), computes the row's
horizontal moments and pushes them into an 11-slot ring (a [16, 2, CP, BW] register tensor,
slot = row % 11). Once 11 rows are in the ring, each new row completes one output row. Inputs are read with their own dtype and
strides (uint8/uint16/float16/bfloat16/float32, NCHW or NHWC or any view): no conversion copies.

Exactness without float64 accumulation. E[x^2] - mu^2 in float32 cancels catastrophically when
the window is nearly flat at a high level (flat MSE sky at 200 next to textured GAN): errors of
1e-3 in D. Instead the variance is formed only from sums of non-negative, already-centred terms,
by the law of total variance over the separable window w[a, b] = g[a] g[b]:

    var = sum_a g[a] * hv[a]  +  sum_a g[a] * (t[a] - mean_a t)^2          (within + between rows)
    hv[a] = sum_b g[b] * (d[a, b] - h1[a])^2,   h1[a] = sum_b g[b] * d[a, b]  (two-pass per row)
    d[a, b] = x[a, b] - x[a, 5]             (row centred on its own centre-column pixel)
    t[a] = (x[a, 5] - x[5, 5]) + h1[a]      (row mean relative to the output's centre pixel)

Every rounding error is then proportional to the local deviations z = x - x[5, 5] rather than to
the intensity level: a flat window gives exactly 0, and since z[5, 5] = 0, Cauchy-Schwarz gives
sum w z^2 <= var / w[5, 5] (w[5, 5] = 0.0708 Gaussian, 1/121 box), so the error is RELATIVE to the
variance itself: |var32 - var| <= rho * var32 (rho = ``var_rel_bound``: 2.4e-4 Gaussian, 1.0e-3
box, a rigorous worst case; realised errors are ~1e-7 relative).
Moments are computed on the raw element values (exact in float32 for all four dtypes) and the
variance is multiplied by scale^2 at the end, so the dtype scaling adds one relative rounding.

Fused mask, decided as float64 decides. From that bound the kernel evaluates D by interval
arithmetic ([var (1 - rho), var (1 + rho)] plus float32 rounding slack at each step) and decides a
pixel in float32 only when the whole interval of clip(D * W[label], 0, 1) is on one side of the
threshold. Any output row of a tile holding an undecided pixel recomputes that row in float64
with direct sums exactly like the reference (mu = w*x, E[x^2] = w*(x^2), var = E[x^2] - mu^2)
inside the same kernel (a branch taken only by such rows; no host synchronisation, no second
launch). The band is about 2e-4 (Gaussian) wide around the threshold: on the bundled real pairs
~1e-4 of the pixels and ~0.3 % of the 32-pixel tile rows take the branch.

Global-memory reads and halo overhead. A program reads its (BH + 10) x (BW + 10) input window
once per image (the gather of a row requests each element from <= 11 lanes of ONE load
instruction, which the coalescer merges), plus the window-centre pixel once per input row and
once per output row. With the GPU tile BH x BW = 64 x 32 the halo overhead per tile is
74 * 42 / (64 * 32) = 1.52x, and since the halo (10) is smaller than both tile sides an input
element is read by at most 2 x 2 = 4 programs: every element is fetched from global memory a
bounded number of times (<= 4 tiles x (1 gather + 2 centre loads)). Neighbouring tiles run at
about the same time, so the halo re-reads are expected to hit L2: DRAM traffic ~1.0x, L2 -> SM
traffic 1.52x the input.

Cost per output pixel, RGB, both images (3840 x 2160 ~ 8.3 Mpx per frame):
  bytes (DRAM, halos served by L2)   read 2*C*s (s = 1 uint8, 2 fp16/bf16, 4 fp32) + write 4 (D)
      uint8: 6 + 4 = 10 B     fp16/bf16: 12 + 4 = 16 B     fp32: 24 + 4 = 28 B
      fused mask, uint8: 6 + 1 (label) + 1 (mask) = 8 B
  arithmetic, per (image, channel) and 11 taps: horizontal 11 x (sub, fma, sub, mul, fma) and
      vertical 11 x (sub, add, fma, sub, mul, fma, fma) = 187 FLOP (FMA = 2), x 6 = ~1.1 kFLOP
      useful; as executed (taps padded 11 -> 16, channels 3 -> 4, ring updates by select,
      gathers, conversions, 64-bit addresses) ~370 instructions per thread per input row with
      256 threads per 32 output pixels = ~3.0k lane-instructions per output pixel.
  H100 SXM (HBM3 3.35 TB/s; 132 SMs x 128 FP32 lanes x 1.98 GHz = 33.5 T lane-instr/s):
      memory bound: 10 B/px -> 335 Gpx/s (25 us per 4K uint8 frame; fp32 inputs: 120 Gpx/s)
      instruction bound: 33.5e12 / 3.0e3 -> ~11 Gpx/s (~0.75 ms per 4K frame)
  => the kernel is instruction-bound at roughly 3 % of the memory roofline. This is an ESTIMATE
  from operation counts and data-sheet peaks, not a measurement: no GPU was available. Resource
  use from ptxas (aot.py): D map 124-127 registers, 8 warps, no spills (2 CTAs = 16 warps per
  SM); fused mask 213-246 registers (1 CTA per SM), the float64 branch being the main cost.
  Known headroom: the padding waste (16/11 taps, 4/3 channels), moving the float64 re-decision
  to a separate small kernel to free registers, 32-bit addressing for tensors < 2^31 elements.
"""
from __future__ import annotations

import triton
import triton.language as tl

from . import window as _win

# Kernel constants must be tl.constexpr globals to be visible inside @triton.jit functions.
C_CONST = tl.constexpr(_win.C_CONST)
VAR_EPS = tl.constexpr(_win.VAR_EPS)

# Relative slack applied at every float32 step of the interval evaluation. Far above the float32
# unit roundoff (6e-8) and the 2-ulp error of the fast sqrt/division instructions, and above the
# float64 reference's own deviation from exact arithmetic (~1e-12 in D).
SLACK = tl.constexpr(2.0**-18)


@triton.jit
def _dmap_row_f64(ptr4, row_step4, ok4, img3, chan2, i, one64, taps2d_ptr, scale64,
                  C: tl.constexpr, CP: tl.constexpr, BW: tl.constexpr):
    """float64 D of output row i for BW columns, exactly as the reference computes it:
    x = element * scale, mu = sum w x, E2 = sum w x^2, var = E2 - mu^2, D = mean_c D_c.
    ptr4 [16, 2, CP, BW]: pointers of tap b of column j in input row 0 (image 0 = MSE, 1 = GAN)."""
    b4 = tl.arange(0, 16)[:, None, None, None]
    mu = tl.zeros([2, CP, BW], dtype=tl.float64)
    e2 = tl.zeros([2, CP, BW], dtype=tl.float64)
    for a in range(11):
        w = tl.load(taps2d_ptr + a * 16 + b4)
        x = tl.load(ptr4 + (i + a) * one64 * row_step4, mask=ok4, other=0)
        x = x.to(tl.float32).to(tl.float64) * scale64  # exact: every input dtype widens exactly
        mu += tl.sum(w * x, axis=0)
        e2 += tl.sum(w * (x * x), axis=0)
    var = e2 - mu * mu
    vx = tl.sum(tl.where(img3 == 0, var, 0.0), axis=0)  # MSE-SR
    vy = tl.sum(tl.where(img3 == 1, var, 0.0), axis=0)  # GAN-SR
    eps = tl.full([CP, BW], VAR_EPS, tl.float64)
    cc = tl.full([CP, BW], C_CONST, tl.float64)
    dc = (2.0 * tl.sqrt(vx + eps) * tl.sqrt(vy + eps) + cc) / (vx + vy + cc)
    dc = tl.where(chan2 < C, dc, 0.0)
    return tl.sum(dc, axis=0) / C


@triton.jit
def stage1_kernel(
    gan_ptr, mse_ptr, out_ptr,
    labels_ptr, wtab64_ptr, taps_ptr, taps2d_ptr, params64_ptr,
    Ho, Wo,
    g_sN, g_sC, g_sH, g_sW,
    m_sN, m_sC, m_sH, m_sW,
    o_sN, o_sH,
    l_sN, l_sH, l_sW,
    n_weights,
    scale2, rho, thr_lo, thr_hi,
    C: tl.constexpr, FUSED_MASK: tl.constexpr, HAS_LABELS: tl.constexpr,
    CP: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):
    """One BH x BW output tile of one image.

    gan_ptr, mse_ptr: element pointers (uint8 / uint16 / float16 / bfloat16 / float32, same dtype), logical
      index (n, c, h, w) -> n*sN + c*sC + h*sH + w*sW; C channels (CP = next_pow2(C)).
    out_ptr: float32 D (or uint8 0/1 mask when FUSED_MASK), (N, Ho, Wo), strides (o_sN, o_sH, 1).
    labels_ptr: uint8 label map (N, Ho+10, Wo+10) read at the +5 offset (only if HAS_LABELS);
      wtab64_ptr: float64 weight per label (n_weights entries).
    taps_ptr: float32 (16,) separable weights; taps2d_ptr: float64 (11*16,) 2-D weights (rows of 16).
    params64_ptr: float64 (2,) = [threshold, scale] for the float64 recompute.
    scale2: scale^2 (float32) applied to the variances; rho: relative variance error bound;
    thr_lo / thr_hi: float32 neighbours of the float64 threshold (thr_lo <= thr <= thr_hi).

    Both images are processed together along a leading axis of size 2 (0 = MSE-SR = x of the
    reference's D_c, 1 = GAN-SR = y), so each step below is one tensor operation (this also
    keeps the interpreter, whose cost is per operation, fast).
    """
    pid_w = tl.program_id(0)
    pid_h = tl.program_id(1)
    # 64-bit element offsets: loop counters are int32, so they are widened by multiplying with one64.
    one64 = tl.full([], 1, tl.int64)
    n = tl.program_id(2) * one64
    col0 = pid_w * BW
    i0 = pid_h * BH
    i_end = tl.minimum(i0 + BH, Ho)

    # Loop-invariant addressing over [tap, image, channel, column]. The tap axis comes first so
    # that Triton's default layout puts lanes on columns and warps on (image, channel): every
    # reduction over the 16 taps / ring slots then stays inside one thread (no shared memory).
    img3 = tl.arange(0, 2)[:, None, None]
    chan3 = tl.arange(0, CP)[None, :, None]
    col3 = col0 + tl.arange(0, BW)[None, None, :]
    is_x3 = img3 == 0
    s_h3 = tl.where(is_x3, m_sH, g_sH) * one64
    s_w3 = tl.where(is_x3, m_sW, g_sW) * one64
    base3 = (tl.where(is_x3, mse_ptr, gan_ptr) + n * (tl.where(is_x3, m_sN, g_sN) * one64)
             + chan3 * (tl.where(is_x3, m_sC, g_sC) * one64))   # [2, CP, 1] pointers
    ptrc = base3 + (col3 + 5) * s_w3                    # window-centre column, input row 0
    okc = (chan3 < C) & (col3 < Wo)
    tap4 = tl.arange(0, 16)[:, None, None, None]
    s_h4 = s_h3[None, :, :, :]
    ptr4 = base3[None, :, :, :] + (col3[None, :, :, :] + tap4) * s_w3[None, :, :, :]  # tap b of column j
    ok4 = okc[None, :, :, :] & (tap4 < 11)
    chan2 = tl.arange(0, CP)[:, None]
    jj = tl.arange(0, BW)
    col_ok = col0 + jj < Wo

    taps4 = tl.load(taps_ptr + tap4)  # [16, 1, 1, 1] float32, zero beyond tap 10
    slot4 = tap4                      # ring slot index along the tap axis

    # Ring of the last 11 input rows' horizontal moments, slot = row % 11 (slots 11..15 unused, 0):
    # ring_c: the row's pixel under the window-centre column; ring_1: row mean relative to it;
    # ring_v: row variance (two-pass).
    ring_c = tl.zeros([16, 2, CP, BW], dtype=tl.float32)
    ring_1 = tl.zeros([16, 2, CP, BW], dtype=tl.float32)
    ring_v = tl.zeros([16, 2, CP, BW], dtype=tl.float32)

    # The first 10 input rows of the tile only fill the ring; from then on every input row
    # completes output row i = r - 10.
    for r in range(i0, i_end + 10):
        r64 = r * one64
        # --- horizontal pass over input row r: centred, two-pass (see module docstring) ---
        x = tl.load(ptr4 + r64 * s_h4, mask=ok4, other=0).to(tl.float32)
        xc = tl.load(ptrc + r64 * s_h3, mask=okc, other=0).to(tl.float32)
        dev = x - xc[None, :, :, :]
        h1 = tl.sum(taps4 * dev, axis=0)
        e = dev - h1[None, :, :, :]
        hv = tl.sum(taps4 * (e * e), axis=0)
        slot = r % 11
        ring_c = tl.where(slot4 == slot, xc[None, :, :, :], ring_c)
        ring_1 = tl.where(slot4 == slot, h1[None, :, :, :], ring_1)
        ring_v = tl.where(slot4 == slot, hv[None, :, :, :], ring_v)

        if r >= i0 + 10:
            # --- vertical pass for output row i: slot s holds input row i + a, a = (s - i) mod 11 ---
            i = r - 10
            tap_of_slot = tl.where(tap4 < 11, (tap4 + 11 - i % 11) % 11, tap4)
            tapsv4 = tl.load(taps_ptr + tap_of_slot)
            rc64 = (i + 5) * one64  # input row of the window centre
            xcc = tl.load(ptrc + rc64 * s_h3, mask=okc, other=0).to(tl.float32)
            t = (ring_c - xcc[None, :, :, :]) + ring_1   # row means relative to the centre pixel
            mu = tl.sum(tapsv4 * t, axis=0)
            dt = t - mu[None, :, :, :]
            var = (tl.sum(tapsv4 * (dt * dt), axis=0) + tl.sum(tapsv4 * ring_v, axis=0)) * scale2
            vx = tl.sum(tl.where(img3 == 0, var, 0.0), axis=0)  # [CP, BW], MSE-SR
            vy = tl.sum(tl.where(img3 == 1, var, 0.0), axis=0)  # GAN-SR
            dc = (2.0 * tl.sqrt(vx + VAR_EPS) * tl.sqrt(vy + VAR_EPS) + C_CONST) / (vx + vy + C_CONST)
            o_off = n * o_sN + i * one64 * o_sH + (col0 + jj)
            if FUSED_MASK:
                # Interval [lo, hi] enclosing the float64 reference's D: |var32 - var| <= rho var32,
                # plus the reference's own cancellation in E[x^2] - mu^2 (~1e-16 E[x^2]; 1e-13 E[x^2]
                # bounds it) and 1e-30 for float32 underflow; SLACK per float32 step.
                mean = xcc + mu
                a_err = (mean * mean * scale2 + var) * 1e-13 + 1e-30
                v_lo = var * (1.0 - rho) - a_err
                v_hi = var * (1.0 + rho) + a_err
                s_lo = tl.sqrt(v_lo + VAR_EPS) * (1.0 - SLACK)
                s_hi = tl.sqrt(v_hi + VAR_EPS) * (1.0 + SLACK)
                sx_lo = tl.sum(tl.where(img3 == 0, s_lo, 0.0), axis=0)
                sy_lo = tl.sum(tl.where(img3 == 1, s_lo, 0.0), axis=0)
                sx_hi = tl.sum(tl.where(img3 == 0, s_hi, 0.0), axis=0)
                sy_hi = tl.sum(tl.where(img3 == 1, s_hi, 0.0), axis=0)
                den_lo = (tl.sum(v_lo, axis=0) + C_CONST) * (1.0 - SLACK)
                den_hi = (tl.sum(v_hi, axis=0) + C_CONST) * (1.0 + SLACK)
                num_lo = (2.0 * sx_lo * sy_lo + C_CONST) * (1.0 - SLACK)
                num_hi = (2.0 * sx_hi * sy_hi + C_CONST) * (1.0 + SLACK)
                d_lo = tl.sum(tl.where(chan2 < C, num_lo / den_hi, 0.0), axis=0) / C * (1.0 - 4 * SLACK)
                d_hi = tl.sum(tl.where(chan2 < C, num_hi / den_lo, 0.0), axis=0) / C * (1.0 + 4 * SLACK)
                if HAS_LABELS:
                    lab = tl.load(labels_ptr + n * l_sN + rc64 * l_sH + (col0 + jj + 5) * one64 * l_sW,
                                  mask=col_ok, other=0).to(tl.int32)
                    w64 = tl.load(wtab64_ptr + lab, mask=col_ok & (lab < n_weights), other=0.0)
                    w32 = w64.to(tl.float32)
                    d_lo = d_lo * w32 * (1.0 - SLACK)
                    d_hi = d_hi * w32 * (1.0 + SLACK)
                else:
                    w64 = tl.full([BW], 1.0, tl.float64)
                p_lo = tl.minimum(tl.maximum(d_lo, 0.0), 1.0)
                p_hi = tl.minimum(tl.maximum(d_hi, 0.0), 1.0)
                is_one = p_hi < thr_lo            # whole interval below the threshold
                is_zero = p_lo >= thr_hi          # whole interval at or above it
                undecided = (~(is_one | is_zero)) & col_ok
                m = is_one.to(tl.uint8)
                if tl.sum(undecided.to(tl.int32), axis=0) > 0:
                    # Rare: some pixel of this row lies within the error band. Recompute the row in
                    # float64 with direct sums, exactly as the reference does.
                    thr64 = tl.load(params64_ptr)
                    scale64 = tl.load(params64_ptr + 1)
                    d64 = _dmap_row_f64(ptr4, s_h4, ok4, img3, chan2, i, one64, taps2d_ptr, scale64,
                                        C, CP, BW)
                    p64 = tl.minimum(tl.maximum(d64 * w64, 0.0), 1.0)
                    m = tl.where(undecided, (p64 < thr64).to(tl.uint8), m)
                tl.store(out_ptr + o_off, m, mask=col_ok)
            else:
                d_out = tl.sum(tl.where(chan2 < C, dc, 0.0), axis=0) / C
                tl.store(out_ptr + o_off, d_out, mask=col_ok)


# --------------------------------------------------------------------------------------------
# Host-side error bound of the float32 variance (used by the fused mask's interval test).
# --------------------------------------------------------------------------------------------
def var_rel_bound(window_1d) -> float:
    """rho such that |var32 - var| <= rho * var32 for every window, with var the exact variance.

    Derivation (standard model fl(a op b) = (a op b)(1 + d), |d| <= u = 2^-24; a float32 sum of
    n terms in any order, FMA or not, errs by <= gamma_{n-1} * sum |terms|, gamma_k = k u/(1-k u)).
    Norms are weighted L2 over the window, ||f||^2 = sum_ab g_a g_b f_ab^2; z = x - x[5, 5],
    Z = ||z||, g5 = centre 1-D weight. Because z[5, 5] = 0, Cauchy-Schwarz gives var >= g5^2 Z^2.
    With y_ab = x_ab - x_a5 (row-centred): ||y|| <= Y = Z (1 + 1/sqrt(g5)); the centre column
    ||z_.5|| <= Z5 = Z / sqrt(g5).
      - row mean h1 (16-term sum of products, weights rounded): |e1_a| <= gamma_18 sum_b g|y|,
        so ||e1|| <= gamma_18 Y; the within-row pass then sees perturbations of norm
        F1 <= (u + gamma_18) Y and a relative gamma_37 (squares, products, two 16-term sums).
      - row means relative to the centre pixel t_a: ||err|| <= E_t = 2.02 u Z5 + (1 + u) gamma_18 Y
        + u Y; their mean: |e_mu| <= E_t + gamma_17 (Z5 + Y + E_t); the between-row pass sees
        F2 = E_t + |e_mu| and a relative gamma_20.
      - sum of the two parts, times scale^2: relative gamma_3 more.
    Hence |var32 - var| <= gamma_40 var + 2 sqrt(var) (F1 + F2) + F1^2 + F2^2 with
    F <= f sqrt(var) / g5, i.e. a pure relative bound. It is converted to a bound relative to the
    computed var32 and doubled for safety. Gaussian: ~2.4e-4, box: ~1.0e-3 (realised errors are
    ~1e-6: the bound only sizes the band of pixels re-decided in float64).
    """
    import math

    u = 2.0**-24

    def gamma(k):
        return k * u / (1.0 - k * u)

    g5 = float(window_1d[len(window_1d) // 2])
    z = 1.0 / g5                      # Z <= z * sqrt(var)
    z5 = z / math.sqrt(g5)
    y = z * (1.0 + 1.0 / math.sqrt(g5))
    f1 = (u + gamma(18)) * y
    e_t = 2.02 * u * z5 + (1.0 + u) * gamma(18) * y + u * y
    e_mu = e_t + gamma(17) * (z5 + y + e_t)
    f2 = e_t + e_mu
    rho = gamma(40) * (1.0 + 2.0 * (f1 + f2)) + 2.0 * (f1 + f2) + f1 * f1 + f2 * f2
    return 2.0 * rho / (1.0 - rho)
