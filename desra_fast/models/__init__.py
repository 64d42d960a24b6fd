"""Super-resolution models: architectures (one file each), checkpoint formats and the loader."""
from .rrdbnet import RRDBNet
from .segmenter import CheckpointError, Segmenter, load_segmenter

__all__ = ["RRDBNet", "Segmenter", "load_segmenter", "CheckpointError"]
