"""Any single-image SR architecture spandrel knows (SwinIR, HAT, SPAN, ...), when it is installed.

Registered last among the ``"sr"`` architectures (:mod:`.registry`): it accepts any state dict
and lets spandrel recognise it; without spandrel the error says how to install it.
"""
from __future__ import annotations

from .checkpoint import CheckpointError
from .registry import Architecture, register

__all__: list = []


def _load(sd, what: str, *, scale=None, noise_level=None):
    try:
        import spandrel
    except ImportError:
        keys = ", ".join(list(sd)[:6])
        raise CheckpointError(
            f"{what}: not an RRDBNet (BasicSR keys conv_first/body.N.rdbK/conv_last) or SRMD (model.N) state "
            f"dict (first keys: {keys}). Other architectures (SwinIR, HAT, SPAN, ...) load through spandrel: "
            f"pip install 'desra_fast[spandrel]'") from None
    if noise_level is not None:
        raise ValueError(f"{what}: noise_level is an SRMD option")
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as e:
        raise CheckpointError(f"{what}: spandrel does not recognise this state dict: {e}") from e
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise CheckpointError(f"{what}: spandrel loaded a {type(desc).__name__}, not a single-image SR model")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise CheckpointError(f"{what}: {desc.architecture.name} takes {desc.input_channels} and gives "
                              f"{desc.output_channels} channels; only RGB models are supported")
    if scale is not None and scale != desc.scale:
        raise CheckpointError(f"{what}: scale={scale} given, spandrel finds x{desc.scale}")
    req = getattr(desc, "size_requirements", None)
    info = dict(arch=f"spandrel:{desc.architecture.name}", scale=int(desc.scale),
                mod=int(getattr(req, "multiple_of", 1) or 1))
    return desc.model.float().eval(), info


register(Architecture("spandrel", "sr", lambda sd: True, _load, priority=-100))
