"""Super-resolution models: architectures (one file each), checkpoint formats and the loader.

- :func:`load_sr` -> :class:`SRModel`: official ``.pth`` / ``.safetensors`` / ncnn ``.param``
  files (and spandrel architectures when installed), tiled thread-safe upscaling.
- :class:`RRDBNet` (BasicSR names), :class:`SRMD` / :class:`SRMDRGB`.
- :mod:`desra_fast.models.zoo`: real weights shipped in pip packages.
"""
from .rrdbnet import RRDBNet
from .sr import SRModel, load_sr
from .srmd import SRMD, SRMDRGB
from .segmenter import CheckpointError, Segmenter, load_segmenter

__all__ = ["RRDBNet", "SRMD", "SRMDRGB", "SRModel", "load_sr", "Segmenter", "load_segmenter", "CheckpointError"]
