"""Model files in the official checkpoint layout (``desra-fast convert``): weights read in any
supported form (an ncnn model zoo, an SRMD graph...) written back as the ``.pth`` Real-ESRGAN and
BasicSR load, or as ``.safetensors``."""
from __future__ import annotations


def to_official_checkpoint(model, output, *, key: str = "params_ema", check_size: int = 16) -> dict:
    """Write ``model``'s weights (an :class:`~desra_fast.models.SRModel`) in the official layout:
    ``{key: state_dict}`` for ``.pth``/``.pt`` (Real-ESRGAN's, loadable by BasicSR), or a
    ``.safetensors`` file with ``arch``, ``scale`` and ``source_sha256`` metadata. Tensors are
    written as float32 on the CPU, atomically.

    Args:
        model: an SRModel of an RRDBNet or SRMD graph (e.g. read from an ncnn model zoo).
        output: destination ``.pth``, ``.pt`` or ``.safetensors`` path.
        key: the state-dict key of a ``.pth`` (``params_ema`` as Real-ESRGAN's GAN models).
        check_size: side of a seeded random (1, 3, s, s) float32 LR in [0, 1] upscaled by
            ``model`` and by the written file reloaded strictly; the outputs must be identical
            (0: no check).

    Returns:
        a summary dict (``arch``, ``scale``, ``tensors``, ``parameters``, ``output``, ``key``,
        ``max_abs_diff``).

    Raises:
        ValueError: another architecture, or another output extension. RuntimeError: the
        written file reloads with other outputs.
    """
    import io
    from pathlib import Path

    import torch

    from ..utils import write_bytes_atomic
    from .sr import load_sr

    arch = model.info["arch"]
    if arch == "RRDBNet":
        sd = model.module.state_dict()
    elif arch == "SRMD":
        sd = model.module.net.state_dict()
    else:
        raise ValueError(f"convert: no official checkpoint layout for a {arch} model "
                         f"(RRDBNet and SRMD graphs convert)")
    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sd.items()}
    out = Path(output)
    if out.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        data = save(sd, metadata={"arch": arch, "scale": str(model.scale), "source_sha256": model.info.get("source_sha256", "")})
    elif out.suffix.lower() in (".pth", ".pt"):
        buf = io.BytesIO()
        torch.save({key: sd}, buf)
        data = buf.getvalue()
    else:
        raise ValueError(f"convert: output must end in .pth, .pt or .safetensors, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, data)
    summary = dict(arch=arch, scale=model.scale, tensors=len(sd), parameters=sum(v.numel() for v in sd.values()),
                   output=str(out), key=None if out.suffix.lower() == ".safetensors" else key, max_abs_diff=None)
    if check_size:
        opts = {"noise_level": model.info["noise_level"]} if arch == "SRMD" else {}
        again = load_sr(out, **opts)
        x = torch.rand(1, 3, check_size, check_size, generator=torch.Generator().manual_seed(0))
        a = model.upscale(x.to(model.device), pre_pad=0).cpu()
        b = again.upscale(x, pre_pad=0)
        summary["max_abs_diff"] = float((a - b).abs().max())
        if summary["max_abs_diff"] != 0.0:
            raise RuntimeError(f"convert: {out} reloads but gives different outputs "
                               f"(max abs diff {summary['max_abs_diff']:.3g})")
    return summary


__all__ = ["to_official_checkpoint"]
