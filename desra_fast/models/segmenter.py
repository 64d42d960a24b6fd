"""ADE20K segmentation for DeSRA's semantic weights: :func:`load_segmenter` and :class:`Segmenter`.

Reads the two SegFormer checkpoint families users have (see :mod:`.segformer`):

- **mmsegmentation** ``.pth`` files (0.x and 1.x: ``{'meta': ..., 'state_dict': ...}`` or a bare
  state dict), keys ``backbone.layers.{i}.{0,1,2}...`` and ``decode_head.{convs, fusion_conv,
  conv_seg}`` — the authors' ``segformer_mit-b5_640x640_160k_ade20k`` is one;
- **Hugging Face** folders or files (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), with transformers 4.x names (``segformer.encoder.block.*``) or 5.x
  names (``segformer.stages.*``).

The MiT variant, decoder width, head kind and class count are inferred from the tensor shapes;
every key must be used and every expected key present (errors list them).

:meth:`Segmenter.segment` reproduces mmsegmentation's test pipeline of the authors' config by
default (``preprocess="mmseg"``): ``Resize(scale=(2048, 640), keep_ratio=True)`` — factor
``s = min(2048 / long side, 640 / short side)``, size ``int(w*s + 0.5), int(h*s + 0.5)``, OpenCV
``INTER_LINEAR`` on the 8-bit image — then mean (123.675, 116.28, 103.53) / std (58.395, 57.12,
57.375) on RGB, whole-image inference, logits resized bilinearly (``align_corners=False``) to the
resized size and then to the original size, argmax. ``preprocess="hf"`` is transformers'
``SegformerImageProcessor`` instead (squash to 512x512 with PIL bilinear, one logits resize).

Memory: the network sees at most ``scale`` (2048x640 = 1.3 Mpx by default) whatever the input
size; logits are brought to the original size in one piece while 150 float32 maps of the sizes
involved fit in ``strip_bytes`` (1 GiB), else in strips of output rows within that bound, so a
16 Mpx image needs about 1 GiB plus its (H, W) label map (mmseg: 600 bytes per pixel, 9.6 GB).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._inputs import (_as_numpy, _check_values_numpy, _check_values_tensor, _scale_for, _to_4d_numpy,
                       _to_4d_tensor, is_tensor)
from .checkpoint import CheckpointError as _ModelCheckpointError

#: mmsegmentation's ADE20K normalisation (RGB, 0..255 scale); HF's ImageNet mean/std are the same /255.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
PREPROCESS = ("mmseg", "hf")
NUM_CLASSES = 150

#: ADE20K colour palette (mmsegmentation's ``ADE20KDataset.METAINFO['palette']``), one RGB per label.
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)


class CheckpointError(_ModelCheckpointError):
    """A segmentation checkpoint that cannot be read or does not fit a SegFormer (a
    :class:`desra_fast.models.CheckpointError`, like the SR loaders' errors)."""


# ----------------------------------------------------------------------------------------------
# reading files

def _torch():
    import torch

    return torch


def _read_torch_file(path: Path, trust: bool) -> Any:
    torch = _torch()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if not _looks_like_torch_file(path):
            raise CheckpointError(f"{path}: not a torch checkpoint, neither a zip archive nor a pickle "
                                  "(truncated or corrupt?)") from exc
        if "Weights only load failed" not in msg:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
                                  f"{msg.splitlines()[0] if msg else exc!r}") from exc
        if not trust:
            raise CheckpointError(
                f"{path}: the checkpoint holds pickled Python objects besides tensors (typically numpy "
                "arrays in its 'meta', as mmcv-era checkpoints do), which torch.load(weights_only=True) "
                f"refuses ({_unsafe_global(msg)}). Unpickling them can run arbitrary code: pass trust=True (CLI: --trust) only "
                "for a file whose origin you trust, or re-save its 'state_dict' alone.") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: cannot unpickle the checkpoint: {exc}") from exc


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch >= 1.6) or a pickle (protocol 2+ starts with 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _unsafe_global(msg: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    return f"first refused object: {m.group(1)}" if m else "non-tensor objects"


def _read_safetensors(path: Path) -> Dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors ships with transformers/our extras
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package") from exc
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _resolve_files(source: Path) -> Tuple[Path, Optional[Path]]:
    """(weights file, config.json or None) for a file or a Hugging Face folder."""
    if source.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (source / name).is_file():
                cfg = source / "config.json"
                return source / name, cfg if cfg.is_file() else None
        if any(source.glob("*.index.json")):
            raise CheckpointError(f"{source}: sharded Hugging Face checkpoints are not supported; "
                                  "merge the shards into one model.safetensors")
        raise CheckpointError(f"{source}: a Hugging Face folder needs model.safetensors or pytorch_model.bin")
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file or folder")
    cfg = source.parent / "config.json"
    return source, cfg if cfg.is_file() else None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# key conversion: mmseg / HF names -> SegFormer's own

_MM_RULES = [
    (r"backbone\.layers\.(\d+)\.0\.projection\.", r"backbone.stages.\1.patch_embed.proj."),
    (r"backbone\.layers\.(\d+)\.0\.norm\.", r"backbone.stages.\1.patch_embed.norm."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.norm1\.", r"backbone.stages.\1.blocks.\2.norm1."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.norm2\.", r"backbone.stages.\1.blocks.\2.norm2."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.attn\.attn\.out_proj\.", r"backbone.stages.\1.blocks.\2.attn.proj."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.attn\.sr\.", r"backbone.stages.\1.blocks.\2.attn.sr."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.attn\.norm\.", r"backbone.stages.\1.blocks.\2.attn.sr_norm."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.0\.", r"backbone.stages.\1.blocks.\2.ffn.fc1."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.1\.", r"backbone.stages.\1.blocks.\2.ffn.dw."),
    (r"backbone\.layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.4\.", r"backbone.stages.\1.blocks.\2.ffn.fc2."),
    (r"backbone\.layers\.(\d+)\.2\.", r"backbone.stages.\1.norm."),
    (r"decode_head\.convs\.(\d+)\.conv\.", r"head.branches.\1.conv."),
    (r"decode_head\.convs\.(\d+)\.bn\.", r"head.branches.\1.bn."),
    (r"decode_head\.fusion_conv\.conv\.", r"head.fuse.conv."),
    (r"decode_head\.fusion_conv\.bn\.", r"head.fuse.bn."),
    (r"decode_head\.conv_seg\.", r"head.cls."),
]
_MM_QKV = re.compile(r"backbone\.layers\.(\d+)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$")

# transformers 4.x -> 5.x names (the renaming transformers 5 applies when loading old files).
_HF4_RULES = [
    (r"encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
    (r"^decode_head\.linear_c\.", "decode_head.linear_projections."),
]
_HF5_RULES = [
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.proj\.", r"backbone.stages.\1.patch_embed.proj."),
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.", r"backbone.stages.\1.patch_embed.norm."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.layernorm_before\.", r"backbone.stages.\1.blocks.\2.norm1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.layernorm_after\.", r"backbone.stages.\1.blocks.\2.norm2."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.attention\.q_proj\.", r"backbone.stages.\1.blocks.\2.attn.q."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.attention\.o_proj\.", r"backbone.stages.\1.blocks.\2.attn.proj."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.attention\.sequence_reduction\.sequence_reduction\.",
     r"backbone.stages.\1.blocks.\2.attn.sr."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.attention\.sequence_reduction\.layer_norm\.",
     r"backbone.stages.\1.blocks.\2.attn.sr_norm."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.stages.\1.blocks.\2.ffn.fc1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.dwconv\.dwconv\.", r"backbone.stages.\1.blocks.\2.ffn.dw."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.stages.\1.blocks.\2.ffn.fc2."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"backbone.stages.\1.norm."),
    (r"^decode_head\.linear_projections\.(\d+)\.proj\.", r"head.branches.\1."),
    (r"^decode_head\.linear_fuse\.", "head.fuse.conv."),
    (r"^decode_head\.batch_norm\.", "head.fuse.bn."),
    (r"^decode_head\.classifier\.", "head.cls."),
]
_HF_KV = re.compile(r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.attention\.(k|v)_proj\.(weight|bias)$")


def _apply(rules, key: str) -> Optional[str]:
    for pat, rep in rules:
        new, n = re.subn(pat, rep, key, count=1)
        if n:
            return new
    return None


def _as_conv1x1(name: str, t):
    """Linear weights (out, in) -> 1x1 conv (out, in, 1, 1) for the MixFFN's fc1/fc2 (HF stores
    Linear layers, mmseg 1x1 convs)."""
    if name.endswith(("ffn.fc1.weight", "ffn.fc2.weight")) and t.dim() == 2:
        return t[:, :, None, None]
    return t


def _convert_mmseg(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    out, unexpected = {}, []
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        m = _MM_QKV.match(k)
        if m:
            i, j, kind = m.groups()
            c = t.shape[0] // 3
            out[f"backbone.stages.{i}.blocks.{j}.attn.q.{kind}"] = t[:c]
            out[f"backbone.stages.{i}.blocks.{j}.attn.kv.{kind}"] = t[c:]
            continue
        new = _apply(_MM_RULES, k)
        if new is None:
            unexpected.append(k)
        else:
            out[new] = _as_conv1x1(new, t)
    return out, unexpected


def _convert_hf(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str], str]:
    names = "5.x"
    v5 = {}
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if ".encoder." in k or k.startswith("encoder.") or "decode_head.linear_c." in k:
            names = "4.x"
        new = k
        if names == "4.x" or re.search(r"attention\.self\.|attention\.output\.|mlp\.dense|layer_norm_[12]\.", k):
            for pat, rep in _HF4_RULES:
                new = re.sub(pat, rep, new)
        if not new.startswith(("segformer.", "decode_head.")) and new.startswith("stages."):
            new = "segformer." + new  # a SegformerModel saved without the task prefix
        v5[new] = t
    out, unexpected, kv = {}, [], {}
    for k, t in v5.items():
        m = _HF_KV.match(k)
        if m:
            kv[m.groups()] = t
            continue
        new = _apply(_HF5_RULES, k)
        if new is None:
            unexpected.append(k)
        else:
            out[new] = _as_conv1x1(new, t)
    for (i, j, which, kind), t in kv.items():
        other = kv.get((i, j, "v" if which == "k" else "k", kind))
        if other is None:
            continue  # reported as a missing attn.kv key
        if which == "k":
            out[f"backbone.stages.{i}.blocks.{j}.attn.kv.{kind}"] = _torch().cat([t, other], 0)
    return out, unexpected, names


def _detect_family(sd: Dict[str, Any]) -> str:
    keys = list(sd)
    if any(k.startswith("backbone.layers.") or k.startswith("decode_head.conv_seg") for k in keys):
        return "mmseg"
    if any(k.startswith(("segformer.", "decode_head.linear", "decode_head.classifier", "encoder.", "stages."))
           for k in keys):
        return "hf"
    sample = ", ".join(keys[:5])
    raise CheckpointError(f"no SegFormer weights found (neither mmsegmentation 'backbone.layers.*' nor "
                          f"Hugging Face 'segformer.*' keys); first keys: {sample}")


def _state_dict_of(obj: Any, path: Path) -> Tuple[Dict[str, Any], dict]:
    torch = _torch()
    meta = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = obj.get("meta") or {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (or {{'meta', 'state_dict'}}), got {type(obj).__name__}")
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: state dict entry {k!r} is not a tensor")
        sd[k[7:] if k.startswith("module.") else k] = v
    return sd, meta if isinstance(meta, dict) else {}


# ----------------------------------------------------------------------------------------------
# configuration from shapes

def _infer_config(sd: Dict[str, Any], *, head: str, ln_eps: float, hf_config: Optional[dict],
                  meta_heads: Optional[Tuple[int, ...]]):
    from .segformer import SegFormerConfig

    stages = sorted({int(m.group(1)) for k in sd for m in [re.match(r"backbone\.stages\.(\d+)\.patch_embed\.proj\.weight$", k)] if m})
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError("missing patch-embedding weights of the encoder stages "
                              "(backbone.layers.{i}.0.projection / segformer.*.patch_embeddings.{i}.proj)")
    dims, depths, srs, patches, mlps = [], [], [], [], []
    for i in stages:
        w = sd[f"backbone.stages.{i}.patch_embed.proj.weight"]
        dims.append(int(w.shape[0]))
        patches.append(int(w.shape[2]))
        blocks = {int(m.group(1)) for k in sd for m in [re.match(rf"backbone\.stages\.{i}\.blocks\.(\d+)\.", k)] if m}
        depths.append(max(blocks) + 1 if blocks else 0)
        sr = sd.get(f"backbone.stages.{i}.blocks.0.attn.sr.weight")
        srs.append(int(sr.shape[2]) if sr is not None else 1)
        fc1 = sd.get(f"backbone.stages.{i}.blocks.0.ffn.fc1.weight")
        mlps.append(int(fc1.shape[0]) // dims[-1] if fc1 is not None else 4)
    cls = sd.get("head.cls.weight")
    if cls is None:
        raise CheckpointError("missing the classifier weights (decode_head.conv_seg / decode_head.classifier)")
    n = len(stages)
    strides = [(p + 1) // 2 for p in patches]
    heads = list(meta_heads) if meta_heads and len(meta_heads) == n else ([1, 2, 5, 8] if n == 4 else [1] * n)
    if hf_config:
        heads = list(hf_config.get("num_attention_heads", heads))
        strides = list(hf_config.get("strides", strides))
        for name, got in (("hidden_sizes", dims), ("depths", depths), ("sr_ratios", srs), ("patch_sizes", patches)):
            want = hf_config.get(name)
            if want is not None and list(want) != got:
                raise CheckpointError(f"config.json says {name}={list(want)} but the weights have {got}")
    try:
        return SegFormerConfig(embed_dims=tuple(dims), depths=tuple(depths), num_heads=tuple(heads),
                               sr_ratios=tuple(srs), patch_sizes=tuple(patches), strides=tuple(strides),
                               mlp_ratios=tuple(mlps), head=head, width=int(cls.shape[1]),
                               num_classes=int(cls.shape[0]), in_channels=int(sd["backbone.stages.0.patch_embed.proj.weight"].shape[1]),
                               ln_eps=ln_eps)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def _meta_num_heads(meta: dict) -> Optional[Tuple[int, ...]]:
    for key in ("config", "cfg"):
        text = meta.get(key)
        if isinstance(text, str):
            m = re.search(r"num_heads\s*=\s*[\[\(]([\d,\s]+)[\]\)]", text)
            if m:
                return tuple(int(v) for v in re.findall(r"\d+", m.group(1)))
    return None


def _key_report(missing: Sequence[str], unexpected: Sequence[str], limit: int = 12) -> str:
    parts = []
    for name, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            keys = sorted(keys)
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {name} key(s): {', '.join(keys[:limit])}{more}")
    return "; ".join(parts)


def build_segformer(sd: Dict[str, Any], *, family: str, hf_config: Optional[dict] = None,
                    meta: Optional[dict] = None, source: str = "checkpoint"):
    """A :class:`SegFormer` holding the weights of an mmseg or HF state dict (strict)."""
    from .segformer import SegFormer, expected_keys

    if family == "mmseg":
        ours, unexpected = _convert_mmseg(sd)
        head, eps, names = "mmseg", 1e-6, None
    else:
        ours, unexpected, names = _convert_hf(sd)
        head, eps = "all-mlp", 1e-5
    cfg = _infer_config(ours, head=head, ln_eps=eps, hf_config=hf_config, meta_heads=_meta_num_heads(meta or {}))
    want = set(expected_keys(cfg))
    missing = sorted(want - set(ours))
    unexpected = sorted(unexpected) + sorted(set(ours) - want)
    if missing or unexpected:
        raise CheckpointError(f"{source}: the weights do not fit a SegFormer {cfg.variant_name} "
                              f"({family} layout): {_key_report(missing, unexpected)}")
    torch = _torch()
    with torch.device("meta"):  # no random init of tens of millions of parameters
        model = SegFormer(cfg)
    state = model.state_dict()
    for k, t in ours.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{source}: tensor {k} has shape {tuple(t.shape)}, expected {tuple(state[k].shape)} "
                                  f"for a SegFormer {cfg.variant_name} ({family} layout)")
        if not t.dtype.is_floating_point:
            raise CheckpointError(f"{source}: tensor {k} has dtype {t.dtype}, expected floating point")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {k} contains NaN or infinite values")
    full = {k: t.float().contiguous() for k, t in ours.items()}
    full.update({k: torch.zeros((), dtype=torch.int64) for k in state if k.endswith("num_batches_tracked")})
    model.load_state_dict(full, strict=True, assign=True)
    model.eval()
    return model, names


# ----------------------------------------------------------------------------------------------
# logits -> labels at the original size, in bounded memory

def _src_coords(out_size: int, in_size: int, torch, device):
    """PyTorch's bilinear source coordinates (align_corners=False) as (i0, i1, l0, l1)."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32)
    src = (scale * (dst + 0.5) - 0.5).clamp_min(0)
    i0 = src.to(torch.int64).clamp_max(in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = src - i0.to(torch.float32)
    l0 = 1 - l1
    return i0.to(device), i1.to(device), l0.to(device), l1.to(device)


def _horizontal(x, out_w: int):
    """Width-only bilinear resize of (rows, channels, W): the arithmetic of PyTorch's bilinear
    kernel with a height scale of 1 (rows map onto themselves with weights 1 and 0)."""
    import torch.nn.functional as F

    return F.interpolate(x, size=out_w, mode="linear", align_corners=False)


def _resize_rows(x, out_h: int, out_w: int, rows, torch):
    """Rows ``rows`` of a bilinear (align_corners=False) resize of ``x`` to (out_h, out_w).

    ``x`` is row-major (in_h, channels, in_w); returns (len(rows), channels, out_w). Same order
    of operations as PyTorch's kernel: width first, then the two source rows mixed.
    """
    y0, y1, ly0, ly1 = (t[rows] for t in _src_coords(out_h, x.shape[0], torch, "cpu"))
    need, inv = torch.unique(torch.cat([y0, y1]), return_inverse=True)
    dev = x.device
    horiz = _horizontal(x[need.to(dev)], out_w)  # (|need|, channels, out_w)
    k = rows.numel()
    inv = inv.to(dev)
    return (ly0.to(dev)[:, None, None] * horiz[inv[:k]]
            + ly1.to(dev)[:, None, None] * horiz[inv[k:]])


def logits_to_labels(logits, sizes: Sequence[Tuple[int, int]], *, strip_bytes: int = 1 << 30):
    """argmax over classes of ``logits`` resized bilinearly through each (h, w) of ``sizes``.

    Args:
        logits: float (N, K, h0, w0).
        sizes: one or two sizes to resize through, in order (mmseg: the resized image, then the
            original); ``align_corners=False`` each time, as ``F.interpolate``.
        strip_bytes: bound on the float32 intermediates of one strip of output rows; above it
            the output is computed strip by strip (same values up to float rounding order).

    Returns:
        int64 (N, H, W) labels, H, W = ``sizes[-1]``, on the logits' device.
    """
    torch = _torch()
    import torch.nn.functional as F

    sizes = [tuple(int(v) for v in sz) for i, sz in enumerate(sizes) if i == 0 or tuple(sz) != tuple(sizes[i - 1])]
    if tuple(logits.shape[2:]) == sizes[0] and len(sizes) > 1:
        sizes = sizes[1:]  # resizing to the same size is the identity (weights 1 and 0)
    if not 1 <= len(sizes) <= 2:
        raise ValueError("logits_to_labels: one or two sizes")
    n, k = logits.shape[:2]
    H, W = sizes[-1]
    widest = max([W] + [s[1] for s in sizes])
    if n * k * H * widest * 4 * 2 <= strip_bytes:  # small: exactly mmseg's operations
        x = logits
        for s in sizes:
            x = F.interpolate(x, size=tuple(s), mode="bilinear", align_corners=False)
        return x.argmax(1)
    out = torch.empty((n, H, W), dtype=torch.int64, device=logits.device)
    rows_per = max(1, strip_bytes // (n * k * widest * 4 * 4))
    # row-major layout (h, N*K, w): selecting rows copies contiguous blocks (indexing, which is
    # much faster on CPU than index_select here)
    x = logits.permute(2, 0, 1, 3).reshape(logits.shape[2], n * k, logits.shape[3]).contiguous()
    for r0 in range(0, H, rows_per):
        rows = torch.arange(r0, min(H, r0 + rows_per))
        if len(sizes) == 1:
            part = _resize_rows(x, H, W, rows, torch)
        else:
            h1, w1 = sizes[0]
            y0, y1, ly0, ly1 = (t[rows] for t in _src_coords(H, h1, torch, "cpu"))
            need, inv = torch.unique(torch.cat([y0, y1]), return_inverse=True)
            mid = _horizontal(_resize_rows(x, h1, w1, need, torch), W)  # rows `need` of resize 1
            kk, dev = rows.numel(), logits.device
            inv = inv.to(dev)
            part = (ly0.to(dev)[:, None, None] * mid[inv[:kk]]
                    + ly1.to(dev)[:, None, None] * mid[inv[kk:]])
        lab = part.reshape(rows.numel(), n, k, W).argmax(2)  # (rows, N, W)
        out[:, r0:r0 + rows.numel()] = lab.permute(1, 0, 2)
    return out


# ----------------------------------------------------------------------------------------------
# the segmenter

def rescale_size(w: int, h: int, scale: Tuple[int, int]) -> Tuple[int, int]:
    """mmcv's keep-ratio ``rescale_size``: the (w, h) an image gets under ``Resize(scale, keep_ratio=True)``."""
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(w * s + 0.5), int(h * s + 0.5)


class Segmenter:
    """An ADE20K semantic segmenter (SegFormer) with the reference preprocessing.

    Args:
        module: the network: normalised (N, 3, H, W) float32 -> logits (N, K, ~H/4, ~W/4).
        info: description (``variant``, ``head``, ``width``, ``num_classes``, ``format``...).
        device: where the network runs (default: the module's parameters' device, else CPU).
        scale: mmseg's keep-ratio ``Resize`` scale (long, short), default (2048, 640) as the
            authors' config; ``None`` feeds the image at its own size.
        preprocess: ``"mmseg"`` (default, the authors' pipeline) or ``"hf"``.
        hf_size: (height, width) of the ``"hf"`` squash resize, default (512, 512).
        runner: optional callable replacing ``module`` when running the network (a runtime such
            as ONNX Runtime); it takes and returns torch tensors like ``module``.
        batch_size: images per network call in :meth:`segment` of a batch.
    """

    def __init__(self, module, *, info: Optional[dict] = None, device=None, scale: Optional[Tuple[int, int]] = (2048, 640),
                 preprocess: str = "mmseg", hf_size: Tuple[int, int] = (512, 512),
                 runner: Optional[Callable] = None, batch_size: int = 4, mean=MEAN, std=STD):
        torch = _torch()
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        if scale is not None:
            if len(scale) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in scale):
                raise ValueError(f"scale must be None or two positive integers (long, short), got {scale!r}")
            scale = (int(scale[0]), int(scale[1]))
        if device is None:
            p = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
            device = p.device if p is not None else "cpu"
        self.device = torch.device(device)
        self.module = module
        self.runner = runner
        self.scale = scale
        self.preprocess = preprocess
        self.hf_size = tuple(int(v) for v in hf_size)
        self.batch_size = int(batch_size)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.info = dict(info or {})
        self.info.update(preprocess=preprocess, scale=scale, mean=tuple(mean), std=tuple(std))
        self.num_classes = int(self.info.get("num_classes", NUM_CLASSES))

    def __repr__(self) -> str:
        i = self.info
        return (f"Segmenter(variant={i.get('variant')!r}, head={i.get('head')!r}, width={i.get('width')}, "
                f"classes={self.num_classes}, preprocess={self.preprocess!r}, scale={self.scale}, device={self.device})")

    def forward(self, x):
        """Run the network on normalised float32 (N, 3, H, W) on :attr:`device` -> logits."""
        torch = _torch()
        with torch.inference_mode():
            return (self.runner or self.module)(x)

    __call__ = forward

    def _net_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.preprocess == "hf":
            return self.hf_size
        if self.scale is None:
            return h, w
        nw, nh = rescale_size(w, h, self.scale)
        return max(1, nh), max(1, nw)  # mmcv would fail on a zero side (extreme aspect ratios)

    def _resize_sizes(self, h: int, w: int, nh: int, nw: int) -> List[Tuple[int, int]]:
        return [(h, w)] if self.preprocess == "hf" else [(nh, nw), (h, w)]

    def segment(self, img, *, return_logits: bool = False):
        """ADE20K labels for an image or a batch.

        Args:
            img: numpy RGB (H, W, 3) or (N, H, W, 3) (also (H, W) grey, 4th channel dropped),
                uint8 0..255, uint16 0..65535 or float in [0, 1]; or a torch tensor (3, H, W) /
                (N, 3, H, W) of those dtypes on any device (moved to :attr:`device`).
            return_logits: also return the network's logits (N, K, h/4, w/4) of the last chunk
                (for debugging).

        Returns:
            numpy: uint8 (H, W) or (N, H, W) labels 0..K-1. torch: int64 (H, W) / (N, H, W) on
            :attr:`device`. uint8 numpy input reproduces mmsegmentation's ``inference_model``
            (OpenCV resize of the 8-bit image); other dtypes are resized in float32.
        """
        torch = _torch()
        if is_tensor(img):
            x, batched = _to_4d_tensor(img, "img")
            _scale_for(x, "img")
            _check_values_tensor(x, "img")
            labels = self._segment_torch(x)
            return labels if batched else labels[0]
        a = _as_numpy(img, "img")
        _scale_for(a, "img")
        a, batched = _to_4d_numpy(a, "img")
        _check_values_numpy(a, "img")
        if a.shape[1] < 1 or a.shape[2] < 1:
            raise ValueError(f"img: empty image of shape {a.shape}")
        out = np.empty(a.shape[:3], dtype=np.uint8 if self.num_classes <= 256 else np.int64)
        for s in range(0, a.shape[0], self.batch_size):
            chunk = a[s:s + self.batch_size]
            x = torch.from_numpy(np.stack([self._prepare_numpy(im) for im in chunk])).to(self.device)
            out[s:s + len(chunk)] = self._labels(x, *chunk.shape[1:3]).cpu().numpy()
        return out if batched else out[0]

    def _prepare_numpy(self, im: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (3, h, w) float32 on the 0..255 scale, resized as the reference does."""
        import cv2

        if im.shape[2] == 1:
            im = np.repeat(im, 3, axis=2)
        im = np.ascontiguousarray(im[:, :, :3])
        h, w = im.shape[:2]
        nh, nw = self._net_size(h, w)
        if im.dtype == np.uint8:
            pass
        elif im.dtype == np.uint16:
            im = im.astype(np.float32) * np.float32(255.0 / 65535.0)
        else:
            im = im.astype(np.float32) * np.float32(255.0)
        if (nh, nw) != (h, w):
            if self.preprocess == "hf":
                im = _pil_bilinear(im, nw, nh)
            else:
                im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(im.astype(np.float32).transpose(2, 0, 1))

    def _segment_torch(self, x):
        torch = _torch()
        import torch.nn.functional as F

        n, c, h, w = x.shape
        x = x.to(self.device)
        if c == 1:
            x = x.expand(n, 3, h, w)
        x = x[:, :3]
        u8 = x.dtype == torch.uint8
        xf = x.float() * float(_scale_for(x, "img"))
        nh, nw = self._net_size(h, w)
        out = torch.empty((n, h, w), dtype=torch.int64, device=self.device)
        for s in range(0, n, self.batch_size):
            xs = xf[s:s + self.batch_size]
            if (nh, nw) != (h, w):
                xs = F.interpolate(xs, size=(nh, nw), mode="bilinear", align_corners=False)
                if u8:  # OpenCV resizes 8-bit images to 8-bit
                    xs = xs.round().clamp(0, 255)
            out[s:s + xs.shape[0]] = self._labels(xs, h, w)
        return out

    def _labels(self, x, h: int, w: int):
        """0..255-scale float (N, 3, nh, nw) on the device -> int64 (N, h, w) labels."""
        nh, nw = x.shape[2:]
        logits = self.forward((x - self.mean) / self.std)
        if logits.dim() != 4 or logits.shape[0] != x.shape[0]:
            raise RuntimeError(f"the segmentation network returned shape {tuple(logits.shape)}, "
                               f"expected ({x.shape[0]}, K, h, w)")
        return logits_to_labels(logits.float(), self._resize_sizes(h, w, nh, nw))


def _pil_bilinear(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """transformers' resize: PIL bilinear on the 8-bit image (float images per channel in mode F)."""
    from PIL import Image

    if im.dtype == np.uint8:
        return np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
    return np.stack([np.asarray(Image.fromarray(im[:, :, c].astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
                     for c in range(im.shape[2])], axis=2)


def load_segmenter(source: Union[str, os.PathLike], *, device="cpu", scale: Optional[Tuple[int, int]] = (2048, 640),
                   runtime: str = "auto", preprocess: str = "mmseg", trust: bool = False,
                   num_classes: Optional[int] = NUM_CLASSES, batch_size: int = 4) -> Segmenter:
    """Load a SegFormer checkpoint (mmsegmentation or Hugging Face) as a :class:`Segmenter`.

    Args:
        source: an mmseg ``.pth`` (0.x / 1.x layout), a Hugging Face folder (``config.json`` +
            ``model.safetensors`` or ``pytorch_model.bin``) or one of those files.
        device: torch device for the network (``"cpu"``, ``"cuda"``...).
        scale: mmseg's keep-ratio resize scale (default (2048, 640), the authors' config), or None.
        runtime: ``"auto"``, ``"torch"`` (eager PyTorch), ``"onnxruntime"`` or ``"tensorrt"``
            (:mod:`desra_fast.runtime`); an ``.onnx`` / ``.engine`` written by
            :func:`desra_fast.export.to_onnx` loads directly with its stored preprocessing.
        preprocess: ``"mmseg"`` (default) or ``"hf"`` (transformers' SegformerImageProcessor).
        trust: allow unpickling non-tensor objects (e.g. numpy arrays in an mmcv checkpoint's
            ``meta``); only for files you trust — unpickling can run code.
        num_classes: required class count (150 for DeSRA's ADE20K weights); None accepts any.
        batch_size: images per network call for batches.

    Returns:
        A :class:`Segmenter`; ``.info`` holds ``format`` (``"mmseg"`` / ``"hf"``), ``names``
        (HF ``"4.x"`` / ``"5.x"``), ``variant`` (``"b0"``..``"b5"`` or ``"custom"``), ``head``,
        ``width``, ``num_classes``, ``config`` and ``source_sha256``.

    Raises:
        CheckpointError (a ValueError): unreadable/truncated file, missing or unexpected keys
        (listed), wrong shapes, a class count other than ``num_classes``, pickled objects
        without ``trust=True``.
    """
    # --- runtimes (desra_fast.runtime): .onnx / .engine files, runtime="onnxruntime"|"tensorrt" ---
    from ..runtime import RUNTIMES, prepare_model, source_kind

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if source_kind(source) != "torch":
        return _load_exported(source, device=device, scale=scale, runtime=runtime, preprocess=preprocess,
                              num_classes=num_classes, batch_size=batch_size)
    # --- end runtimes ---
    src = Path(os.fspath(source))
    path, cfg_path = _resolve_files(src)
    if path.suffix == ".safetensors":
        obj = _read_safetensors(path)
    else:
        obj = _read_torch_file(path, trust)
    sd, meta = _state_dict_of(obj, path)
    family = _detect_family(sd)
    hf_config = None
    if family == "hf" and cfg_path is not None:
        try:
            hf_config = json.loads(cfg_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: not a readable config.json: {exc}") from exc
        if not isinstance(hf_config, dict):
            raise CheckpointError(f"{cfg_path}: config.json must hold a JSON object")
    model, names = build_segformer(sd, family=family, hf_config=hf_config, meta=meta, source=str(path))
    cfg = model.cfg
    if num_classes is not None and cfg.num_classes != num_classes:
        raise CheckpointError(f"{path}: the classifier has {cfg.num_classes} classes, expected {num_classes} "
                              "(ADE20K, the classes of DeSRA's semantic weights); pass num_classes=None to accept it")
    info = dict(format=family, names=names, variant=cfg.variant_name, head=cfg.head, width=cfg.width,
                num_classes=cfg.num_classes, ln_eps=cfg.ln_eps, config=cfg.to_dict(), source=str(src),
                source_sha256=_file_sha256(path))
    model = model.to(device)
    seg = Segmenter(model, info=info, device=device, scale=scale, preprocess=preprocess, batch_size=batch_size)
    # --- runtimes: a non-torch runtime runs the (cached) export of this model ---
    rt, _, runner = prepare_model(source, kind="segmenter", runtime=runtime, device=device, load_torch=lambda: seg)
    seg.runner = runner
    seg.info["runtime"] = rt
    return seg


def _load_exported(source, *, device, scale, runtime, preprocess, num_classes, batch_size) -> Segmenter:
    """A Segmenter running an exported ``.onnx`` / ``.engine`` (desra_fast.runtime). The file's
    preprocessing (resize scale, mmseg/hf, mean/std) is used unless other values are passed."""
    from ..runtime import prepare_model

    rt, info, runner = prepare_model(source, kind="segmenter", runtime=runtime, device=device)
    info = dict(info)
    if num_classes is not None and int(info.get("num_classes", NUM_CLASSES)) != num_classes:
        raise CheckpointError(f"{source}: the exported segmenter has {info.get('num_classes')} classes, expected "
                              f"{num_classes}; pass num_classes=None to accept it")
    if preprocess == "mmseg":
        preprocess = info.get("preprocess", "mmseg")
    if scale == (2048, 640):
        scale = tuple(info["scale"]) if info.get("scale") is not None else None
    info.update(runtime=rt, exported=str(source))
    return Segmenter(None, info=info, device=device, scale=scale, preprocess=preprocess, runner=runner,
                     batch_size=batch_size, mean=tuple(info.get("mean", MEAN)), std=tuple(info.get("std", STD)))
    # --- end runtimes ---


def save_label_png(path, labels: np.ndarray, *, fsync: bool = True) -> None:
    """Atomically write (H, W) labels 0..149 as a palette PNG (ADE20K colours, values = labels)."""
    from ..imageio import write_bytes_atomic

    write_bytes_atomic(path, label_png_bytes(labels), fsync=fsync)


def label_png_bytes(labels: np.ndarray) -> bytes:
    """(H, W) integer labels 0..255 -> palette PNG bytes with the ADE20K palette."""
    import io

    from PIL import Image

    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must be in 0..255 to be stored in a palette PNG")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = [v for rgb in ADE20K_PALETTE for v in rgb]
    im.putpalette(pal + [0] * (768 - len(pal)))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


__all__ = ["Segmenter", "load_segmenter", "CheckpointError", "build_segformer", "logits_to_labels", "rescale_size",
           "save_label_png", "label_png_bytes", "ADE20K_PALETTE", "MEAN", "STD"]
