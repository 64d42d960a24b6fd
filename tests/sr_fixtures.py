"""Shared helpers of the SR model tests: the ncnn runtime as reference, small real LR crops."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def lr_crop(name: str = "motorcycle", size: int = 32, y: int = 40, x: int = 60) -> np.ndarray:
    """A (size, size, 3) uint8 RGB crop of a real LR sample of the repo (samples/lr)."""
    img = cv2.cvtColor(cv2.imread(str(ROOT / "samples" / "lr" / f"{name}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def ncnn_net(param, bin=None, threads: int = 2):
    """An ``ncnn.Net`` on CPU, plain fp32 (no Vulkan, no fp16/bf16 storage or arithmetic)."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
                "use_bf16_packed", "use_int8_inference"):
        if hasattr(net.opt, opt):
            setattr(net.opt, opt, False)
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(bin or Path(param).with_suffix(".bin"))) != 0:
        raise RuntimeError(f"ncnn could not load {param}")
    return net


def ncnn_run(net, chw: np.ndarray, in_blob: str, out_blob: str = "output") -> np.ndarray:
    """Run one (C, H, W) float32 input through an ncnn net; returns (C', H', W') float32."""
    import ncnn

    data = np.ascontiguousarray(chw, dtype=np.float32)   # ncnn.Mat borrows this buffer: keep it alive
    mat = ncnn.Mat(data)
    ex = net.create_extractor()
    ex.input(in_blob, mat)
    ret, out = ex.extract(out_blob)
    if ret != 0:
        raise RuntimeError(f"ncnn extract failed ({ret})")
    return np.array(out).copy()


def ncnn_realesrgan(net, rgb: np.ndarray, pre_pad: int = 10, scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Real-ESRGAN conventions on the ncnn runtime: RGB/255, reflect-101 pre-pad, crop, round.

    Returns (float output in [0,1]-ish (H*s, W*s, 3), uint8 output).
    """
    x = cv2.copyMakeBorder(rgb, pre_pad, pre_pad, pre_pad, pre_pad, cv2.BORDER_REFLECT_101)
    y = ncnn_run(net, x.transpose(2, 0, 1).astype(np.float32) / 255.0, "data")
    y = y[:, pre_pad * scale:y.shape[1] - pre_pad * scale, pre_pad * scale:y.shape[2] - pre_pad * scale]
    y = y.transpose(1, 2, 0)
    return y, np.clip(np.floor(y * 255.0 + 0.5), 0, 255).astype(np.uint8)


def ncnn_srmd(net, rgb: np.ndarray, scale: int, noise_level: int | None = 10, pre_pad: int = 12):
    """srmd-ncnn-vulkan conventions on the ncnn runtime: 19 (or 18) channels, replicate pre-pad."""
    from desra_fast.models.srmd import SRMD_DEGRADATION_VECTOR

    x = cv2.copyMakeBorder(rgb, pre_pad, pre_pad, pre_pad, pre_pad, cv2.BORDER_REPLICATE)
    x = x.transpose(2, 0, 1).astype(np.float32) / 255.0
    code = list(SRMD_DEGRADATION_VECTOR) + ([noise_level / 255.0] if noise_level is not None else [])
    planes = np.broadcast_to(np.asarray(code, np.float32)[:, None, None], (len(code),) + x.shape[1:])
    y = ncnn_run(net, np.concatenate([x, planes]), "input")
    y = y[:, pre_pad * scale:y.shape[1] - pre_pad * scale, pre_pad * scale:y.shape[2] - pre_pad * scale]
    y = y.transpose(1, 2, 0)
    return y, np.clip(np.floor(y * 255.0 + 0.5), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- pytest fixtures
import pytest  # noqa: E402


def official_rrdbnet_keys(num_block: int = 23) -> list[str]:
    """The BasicSR / Real-ESRGAN RRDBNet key list, written out from the documented layout."""
    names = ["conv_first"]
    names += [f"body.{b}.rdb{r}.conv{c}" for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    return [f"{n}.{p}" for n in names for p in ("weight", "bias")]


@pytest.fixture(scope="session")
def x4plus():
    """Real-ESRGAN x4plus converted from the packaged ncnn files (skips when not installed)."""
    from desra_fast.models import load_sr
    from desra_fast.models.zoo import packaged_model

    try:
        packaged_model("realesrgan-x4plus")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return load_sr("realesrgan-x4plus")


@pytest.fixture(scope="session")
def lr32():
    return lr_crop("motorcycle", 32, 40, 60)


@pytest.fixture(scope="session")
def x4plus_ncnn_out(x4plus, lr32):
    pytest.importorskip("ncnn")
    return ncnn_realesrgan(ncnn_net(x4plus.info["source"]), lr32)


@pytest.fixture(scope="session")
def x4plus_out(x4plus, lr32):
    return x4plus.upscale(lr32)
