"""Super-resolution models: architectures (one file each), checkpoint formats and the loader.

- :func:`load_sr` -> :class:`SRModel`: official ``.pth`` / ``.safetensors`` / ncnn ``.param``
  files (and spandrel architectures when installed), tiled thread-safe upscaling.
- :class:`RRDBNet` (BasicSR names), :class:`SRMD` / :class:`SRMDRGB`.
- :mod:`desra_fast.models.zoo`: real weights shipped in pip packages.
- :func:`read_weights` (:mod:`.checkpoint`): the one reader of every weight format, one safety
  policy; :class:`CheckpointError`: every unreadable or ill-fitting checkpoint, SR, segmentation,
  ncnn or fine-tune (:class:`UnsafeCheckpointError`: a pickle that would run code).
- :mod:`.registry`: the architectures the loaders recognise (one file each registers itself).
"""
from .checkpoint import CheckpointError, UnsafeCheckpointError, read_weights
from .registry import Architecture, architectures, load_architecture, register
# Architecture and format modules register themselves with the registry / the reader on import;
# the catch-all spandrel entry comes after the architectures it must not shadow.
from .rrdbnet import RRDBNet
from .srmd import SRMD, SRMDRGB
from . import ncnn, spandrel_arch  # noqa: F401,E402  (registrations)
from .sr import SRModel, load_sr
from .segmenter import Segmenter, load_segmenter

__all__ = ["RRDBNet", "SRMD", "SRMDRGB", "SRModel", "load_sr", "Segmenter", "load_segmenter", "CheckpointError",
           "UnsafeCheckpointError", "read_weights", "Architecture", "architectures", "register",
           "load_architecture"]
