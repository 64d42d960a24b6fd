"""The architecture registry: which network a state dict holds, and how to build it.

In the manner of spandrel's ``ArchRegistry``: every architecture file declares, with
:func:`register`, an :class:`Architecture`: how to recognise its state dict (``detect``: cheap,
key names only) and how to build the module with the weights (``load``: infers the
hyper-parameters from the tensor shapes, loads strictly, raises :class:`CheckpointError` naming
what does not fit). Loaders ask the registry for their ``kind``:

- ``"sr"``: :func:`desra_fast.models.load_sr` (RRDBNet, SRMD, then spandrel's architectures);
- ``"segmenter"``: :func:`desra_fast.models.load_segmenter` (SegFormer, mmseg and HF layouts);
- ``"discriminator"``, ``"vgg"``: the fine-tune's ``--netd`` and ``--vgg``.

Adding an architecture is one new file that calls :func:`register` and is imported by its
package's ``__init__`` (``desra_fast.models`` for SR models and segmenters, ``desra_fast.train``
for the fine-tune's networks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .checkpoint import CheckpointError

__all__ = ["Architecture", "register", "architectures", "find_architecture", "load_architecture"]

StateDict = Mapping[str, Any]


@dataclass(frozen=True)
class Architecture:
    """One architecture the loaders know.

    Attributes:
        name: its name (``info['arch']`` of what it builds), unique within ``kind``.
        kind: ``"sr"``, ``"segmenter"``, ``"discriminator"`` or ``"vgg"``.
        detect: ``detect(state_dict) -> bool``: whether the keys look like this architecture
            (names only; shapes are checked by ``load``).
        load: ``load(state_dict, what, **options) -> (module, info)``: the module holding the
            weights (strictly) and ``info`` with ``arch`` and the inferred hyper-parameters;
            ``what`` names the source in error messages; unknown options raise ValueError.
        priority: higher is tried first (a catch-all such as spandrel uses a low one).
    """
    name: str
    kind: str
    detect: Callable[[StateDict], bool]
    load: Callable[..., Tuple[Any, dict]]
    priority: int = 0


_REGISTRY: Dict[str, Dict[str, Architecture]] = {}


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` (a second registration of the same kind and name replaces the first, so a
    module reloaded in a test does not register twice)."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"register: expected an Architecture, got {type(arch).__name__}")
    _REGISTRY.setdefault(arch.kind, {})[arch.name] = arch
    return arch


def architectures(kind: Optional[str] = None) -> List[Architecture]:
    """The registered architectures of ``kind`` (all kinds if None), in the order they are tried."""
    kinds = [kind] if kind is not None else sorted(_REGISTRY)
    found = [a for k in kinds for a in _REGISTRY.get(k, {}).values()]
    return sorted(found, key=lambda a: -a.priority)  # stable: registration order among equals


def find_architecture(sd: StateDict, kind: str) -> Optional[Architecture]:
    """The first architecture of ``kind`` whose ``detect`` accepts ``sd``, or None."""
    for arch in architectures(kind):
        if arch.detect(sd):
            return arch
    return None


def load_architecture(sd: StateDict, kind: str, what: str, **options) -> Tuple[Any, dict]:
    """Recognise the architecture of ``sd`` among those of ``kind`` and build it.

    Args:
        sd: the state dict (``{name: Tensor}``), already taken out of its checkpoint.
        kind: ``"sr"``, ``"segmenter"``, ``"discriminator"`` or ``"vgg"``.
        what: the source's name for error messages (usually the file path).
        **options: passed to the architecture's ``load`` (SR: ``scale``, ``noise_level``;
            segmenter: ``hf_config``, ``meta``).

    Returns:
        ``(module, info)``; ``info['arch']`` names the architecture.

    Raises:
        CheckpointError: no registered architecture of ``kind`` recognises the keys (the
            message lists the first keys and the known architectures), or the weights do not
            fit the one that does.
    """
    arch = find_architecture(sd, kind)
    if arch is None:
        keys = ", ".join(list(sd)[:6])
        known = ", ".join(a.name for a in architectures(kind)) or "none registered"
        raise CheckpointError(f"{what}: no known {kind} architecture recognises this state dict "
                              f"(first keys: {keys}; known: {known})")
    return arch.load(sd, what, **options)
