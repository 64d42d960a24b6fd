"""Key-renaming filters of the SegFormer checkpoint families, in the manner of timm's
``checkpoint_filter_fn``: each turns one family's state dict into SegFormer's own names
(:mod:`.segformer`) and lists the keys it does not know.

- :func:`mmseg_filter_fn`: mmsegmentation 0.x / 1.x (``backbone.layers.{i}.{0,1,2}...``,
  ``decode_head.{convs, fusion_conv, conv_seg}``; fused ``in_proj`` q/k/v split into q and kv);
- :func:`hf_filter_fn`: Hugging Face names, in two steps: :func:`hf4_filter_fn` renames
  transformers 4.x names (``segformer.encoder.block.*``) to 5.x names (``segformer.stages.*``,
  the renaming transformers 5 applies when loading old files), :func:`hf5_filter_fn` renames 5.x
  names to ours (k and v projections concatenated into kv).

:func:`detect_family` tells the families apart; :func:`state_dict_of` takes the state dict out
of an mmseg ``{'meta', 'state_dict'}`` checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple  # noqa: F401

import torch

from .checkpoint import CheckpointError

__all__ = ["mmseg_filter_fn", "hf_filter_fn", "hf4_filter_fn", "hf5_filter_fn", "detect_family", "state_dict_of"]


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


def mmseg_filter_fn(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """mmseg names -> ours: ``(renamed state dict, keys not recognised)``."""
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


def hf_filter_fn(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str], str]:
    """HF 4.x / 5.x names -> ours: ``(renamed state dict, keys not recognised, "4.x" | "5.x")``."""
    v5, names = hf4_filter_fn(sd)
    out, unexpected = hf5_filter_fn(v5)
    return out, unexpected, names


def hf4_filter_fn(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    """transformers 4.x names -> 5.x names (5.x keys pass unchanged): ``(state dict, "4.x" | "5.x")``."""
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
    return v5, names


def hf5_filter_fn(v5: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """transformers 5.x names -> ours (k and v projections concatenated into kv):
    ``(renamed state dict, keys not recognised)``."""
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
            out[f"backbone.stages.{i}.blocks.{j}.attn.kv.{kind}"] = torch.cat([t, other], 0)
    return out, unexpected


def detect_family(sd: Dict[str, Any]) -> str:
    """``"mmseg"`` or ``"hf"`` from the key names; CheckpointError when neither."""
    keys = list(sd)
    if any(k.startswith("backbone.layers.") or k.startswith("decode_head.conv_seg") for k in keys):
        return "mmseg"
    if any(k.startswith(("segformer.", "decode_head.linear", "decode_head.classifier", "encoder.", "stages."))
           for k in keys):
        return "hf"
    sample = ", ".join(keys[:5])
    raise CheckpointError(f"no SegFormer weights found (neither mmsegmentation 'backbone.layers.*' nor "
                          f"Hugging Face 'segformer.*' keys); first keys: {sample}")


def state_dict_of(obj: Any, path: Path) -> Tuple[Dict[str, Any], dict]:
    """``(state dict, meta)`` of an mmseg checkpoint, a ``{'model': sd}`` file or a bare state dict
    (``module.`` prefixes removed); CheckpointError when an entry is not a tensor."""
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
