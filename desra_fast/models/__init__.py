"""Super-resolution models: architectures (one file each), checkpoint formats and the loader.

- :func:`load_sr` -> :class:`SRModel`: official ``.pth`` / ``.safetensors`` / ncnn ``.param``
  files (and spandrel architectures when installed), tiled thread-safe upscaling.
- :class:`RRDBNet` (BasicSR names), :class:`SRMD` / :class:`SRMDRGB`.
- :mod:`desra_fast.models.zoo`: real weights shipped in pip packages.
- :class:`CheckpointError`: every unreadable or ill-fitting checkpoint, SR or segmentation
  (:class:`UnsafeCheckpointError`: a pickle that would run code).
"""
from .checkpoint import CheckpointError, UnsafeCheckpointError
from .rrdbnet import RRDBNet
from .sr import SRModel, load_sr
from .srmd import SRMD, SRMDRGB
from .segmenter import Segmenter, load_segmenter

__all__ = ["RRDBNet", "SRMD", "SRMDRGB", "SRModel", "load_sr", "Segmenter", "load_segmenter", "CheckpointError",
           "UnsafeCheckpointError"]
