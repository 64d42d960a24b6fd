"""pseudo_gt (Eq. 10) and repair(): against the formula written with numpy, numpy vs torch,
feathering properties, detection when no mask is given (real Real-ESRGAN / SRMD sample pair),
and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import desra_fast
from desra_fast import pseudo_gt, repair
from images import real_pair

torch = pytest.importorskip("torch")


def _pair(h=24, w=32, n=None, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if n is None else (n, h, w, 3)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == np.uint16:
        return rng.integers(0, 65536, shape, dtype=np.uint16), rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.random(shape).astype(dtype), rng.random(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_pseudo_gt_binary_mask_is_the_formula(dtype):
    gan, mse = _pair(dtype=dtype)
    mask = np.zeros((24, 32), bool)
    mask[3:15, 5:20] = True
    want = mask[..., None] * mse.astype(np.float64) + (1 - mask[..., None]) * gan.astype(np.float64)
    got = pseudo_gt(gan, mse, mask)
    assert got.dtype == dtype and got.shape == gan.shape
    np.testing.assert_array_equal(got.astype(np.float64), want)
    # a 0/255 PNG mask as read means the same
    np.testing.assert_array_equal(pseudo_gt(gan, mse, mask.astype(np.uint8) * 255), got)


def test_pseudo_gt_batch_soft_mask_and_torch_agree():
    gan, mse = _pair(n=2)
    rng = np.random.default_rng(5)
    soft = rng.random((2, 24, 32)).astype(np.float32)
    want = np.floor(soft[..., None] * mse + (1 - soft[..., None]) * gan.astype(np.float64) + 0.5)
    got = pseudo_gt(gan, mse, soft)
    assert np.max(np.abs(got.astype(np.float64) - want)) <= 1  # float32 blend, rounded half up
    tg = torch.from_numpy(gan).permute(0, 3, 1, 2)
    tm = torch.from_numpy(mse).permute(0, 3, 1, 2)
    tt = pseudo_gt(tg, tm, torch.from_numpy(soft))
    assert tt.dtype == torch.uint8 and tt.shape == tg.shape
    np.testing.assert_array_equal(tt.permute(0, 2, 3, 1).numpy(), got)
    # float tensors, one (H, W) mask for the whole batch, and (N, 1, H, W)
    fg, fm = tg.float() / 255, tm.float() / 255
    m = torch.zeros(24, 32, dtype=torch.bool)
    m[:10] = True
    out = pseudo_gt(fg, fm, m)
    assert torch.equal(out[:, :, :10], fm[:, :, :10]) and torch.equal(out[:, :, 10:], fg[:, :, 10:])
    assert torch.equal(pseudo_gt(fg, fm, m[None, None].expand(2, 1, 24, 32)), out)


@pytest.mark.parametrize("r", [1, 3])
def test_feather_keeps_mask_and_fades_within_2r(r):
    gan, mse = _pair(h=40, w=40, dtype=np.float32)
    mask = np.zeros((40, 40), bool)
    mask[15:25, 12:22] = True
    out = repair(gan, mse, mask, feather=r)
    np.testing.assert_array_equal(out[mask], mse[mask])  # artifacts fully replaced
    from scipy.ndimage import distance_transform_cdt

    dist = distance_transform_cdt(~mask, metric="chessboard")
    np.testing.assert_array_equal(out[dist > 2 * r], gan[dist > 2 * r])  # far away: untouched
    ring = (dist >= 1) & (dist <= 2 * r - 1)
    lo, hi = np.minimum(gan, mse)[ring], np.maximum(gan, mse)[ring]
    assert np.all(out[ring] >= lo - 1e-6) and np.all(out[ring] <= hi + 1e-6)
    assert not np.array_equal(out[ring], gan[ring])  # the edge is blended
    # torch gives the same weights
    t = repair(torch.from_numpy(gan).permute(2, 0, 1), torch.from_numpy(mse).permute(2, 0, 1),
               torch.from_numpy(mask), feather=r)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), out, rtol=0, atol=1e-6)


def test_repair_without_mask_uses_detect_on_a_real_pair():
    gan, mse = (a.copy() for a in real_pair("rocket"))
    mask = desra_fast.detect(gan, mse)
    assert mask.any()
    out = repair(gan, mse)
    np.testing.assert_array_equal(out[mask], mse[mask])
    np.testing.assert_array_equal(out[~mask], gan[~mask])
    tg, tm = torch.from_numpy(gan).permute(2, 0, 1), torch.from_numpy(mse).permute(2, 0, 1)
    tout = repair(tg, tm, area_threshold=100)
    tmask = desra_fast.detect(tg, tm, area_threshold=100)
    assert torch.equal(tout, torch.where(tmask[None], tm, tg))


def test_errors_name_the_problem():
    gan, mse = _pair()
    with pytest.raises(ValueError, match="mask shape"):
        pseudo_gt(gan, mse, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pseudo_gt(gan, mse, np.full((24, 32), 2.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pseudo_gt(gan, mse, np.full((24, 32), np.nan))
    with pytest.raises(ValueError, match="same shape"):
        pseudo_gt(gan, mse[:-1], np.zeros((24, 32), bool))
    with pytest.raises(TypeError, match="torch tensor"):
        pseudo_gt(torch.from_numpy(gan).permute(2, 0, 1), torch.from_numpy(mse).permute(2, 0, 1),
                  np.zeros((24, 32), bool))
    with pytest.raises(ValueError, match="feather"):
        repair(gan, mse, np.zeros((24, 32), bool), feather=-1)
    with pytest.raises(TypeError, match="detection options"):
        repair(gan, mse, np.zeros((24, 32), bool), threshold=0.5)
    with pytest.raises(ValueError, match="NaN"):
        g = gan.astype(np.float32) / 255
        g[0, 0, 0] = np.nan
        pseudo_gt(g, mse.astype(np.float32) / 255, np.zeros((24, 32), bool))
