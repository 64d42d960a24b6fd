"""Super-resolution models: architectures (one file each), checkpoint formats and the loader."""
from .rrdbnet import RRDBNet

__all__ = ["RRDBNet"]
