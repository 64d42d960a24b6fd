"""SegFormer (Xie et al., NeurIPS 2021): the MiT-B0..B5 encoder and both decode heads.

One module represents the two checkpoint families that exist for ADE20K SegFormer:

- mmsegmentation's ``SegformerHead`` (``head="mmseg"``): each of the four branches is a 1x1 conv
  without bias + BatchNorm + **ReLU**; the branches are concatenated in stage order 1..4, then a
  1x1 conv + BN + ReLU fuses them and a 1x1 conv (``cls``) gives the logits. mmseg's MiT uses
  LayerNorm eps 1e-6. Its ADE20K configs keep a decoder width of 256 for every variant.
- Hugging Face's ``SegformerDecodeHead`` (``head="all-mlp"``, the paper's head): the branches
  are Linear layers (with bias) and no activation, concatenated in reverse order 4..1; the fuse
  and classifier are as above. transformers' LayerNorms use eps 1e-5. Width 256 (B0/B1) or 768.

Only plain torch operations (conv, linear, layer norm, ``scaled_dot_product_attention``,
bilinear interpolation), so the module traces to ONNX. Parameter names are this module's own;
:mod:`.segformer_keys` converts the checkpoints of both libraries to them. Registered as the
``"segmenter"`` architecture ``SegFormer`` (:mod:`.registry`): variant, decoder width, head kind
and class count are inferred from the tensor shapes (:func:`build_segformer`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError
from .registry import Architecture, register
from .segformer_keys import detect_family, hf_filter_fn, mmseg_filter_fn

#: The MiT variants of the paper: (embed dims per stage, blocks per stage). All use heads
#: (1, 2, 5, 8), spatial-reduction ratios (8, 4, 2, 1), patch sizes (7, 3, 3, 3), strides
#: (4, 2, 2, 2) and an MLP ratio of 4.
MIT_VARIANTS = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}

HEAD_KINDS = ("mmseg", "all-mlp")


@dataclass(frozen=True)
class SegFormerConfig:
    """Hyper-parameters of a SegFormer; :meth:`variant` builds the standard ones.

    ``ln_eps`` is 1e-6 for mmsegmentation checkpoints and 1e-5 for Hugging Face ones; ``head``
    is ``"mmseg"`` or ``"all-mlp"``; ``width`` is the decoder's channel count.
    """

    embed_dims: Tuple[int, ...] = (64, 128, 320, 512)
    depths: Tuple[int, ...] = (3, 6, 40, 3)
    num_heads: Tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: Tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: Tuple[int, ...] = (7, 3, 3, 3)
    strides: Tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratios: Tuple[int, ...] = (4, 4, 4, 4)
    head: str = "mmseg"
    width: int = 256
    num_classes: int = 150
    in_channels: int = 3
    ln_eps: float = 1e-6
    bn_eps: float = 1e-5

    def __post_init__(self):
        n = len(self.embed_dims)
        for name in ("depths", "num_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"SegFormerConfig: {name} must have {n} entries (one per stage)")
        for c, h in zip(self.embed_dims, self.num_heads):
            if h < 1 or c % h:
                raise ValueError(f"SegFormerConfig: {c} channels cannot be split into {h} heads")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"SegFormerConfig: head must be one of {HEAD_KINDS}, got {self.head!r}")

    @classmethod
    def variant(cls, name: str, **overrides) -> "SegFormerConfig":
        """The paper's MiT-B0..B5 (``name`` ``"b0"``..``"b5"``), with field overrides."""
        key = name.lower().replace("mit-", "").replace("mit_", "")
        if key not in MIT_VARIANTS:
            raise ValueError(f"unknown MiT variant {name!r}; expected one of {sorted(MIT_VARIANTS)}")
        dims, depths = MIT_VARIANTS[key]
        return cls(embed_dims=dims, depths=depths, **overrides)

    @property
    def variant_name(self) -> str:
        """``"b0"``..``"b5"`` when the encoder is one of the paper's, else ``"custom"``."""
        std = dict(num_heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1), patch_sizes=(7, 3, 3, 3),
                   strides=(4, 2, 2, 2), mlp_ratios=(4, 4, 4, 4))
        if any(tuple(getattr(self, k)) != v for k, v in std.items()):
            return "custom"
        for name, (dims, depths) in MIT_VARIANTS.items():
            if tuple(self.embed_dims) == dims and tuple(self.depths) == depths:
                return name
        return "custom"

    def to_dict(self) -> dict:
        return asdict(self)


class OverlapPatchEmbed(nn.Module):
    """Strided conv (padding k//2) + LayerNorm: (N, Cin, H, W) -> tokens (N, h*w, C), (h, w)."""

    def __init__(self, cin: int, cout: int, patch: int, stride: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(cout, eps=eps)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values are spatially reduced by a strided conv."""

    def __init__(self, dim: int, heads: int, sr: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # keys then values
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.sr_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, h: int, w: int):
        n, length, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(n, length, self.heads, d).transpose(1, 2)
        if self.sr_ratio > 1:
            r = self.sr(x.transpose(1, 2).reshape(n, c, h, w))
            r = self.sr_norm(r.flatten(2).transpose(1, 2))
        else:
            r = x
        kv = self.kv(r).reshape(n, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


class MixFFN(nn.Module):
    """fc1 (1x1 conv) -> 3x3 depthwise conv -> GELU -> fc2 (1x1 conv), on tokens of an (h, w) grid.

    Computed in NCHW throughout (one layout change in, one out), as mmseg's ``MixFFN``: faster on
    CPU than Linear layers on tokens with a transpose around the depthwise conv.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x, h: int, w: int):
        n, _, c = x.shape
        y = self.fc2(F.gelu(self.dw(self.fc1(x.transpose(1, 2).reshape(n, c, h, w)))))
        return y.flatten(2).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientAttention(dim, heads, sr, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x, h: int, w: int):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)


class Stage(nn.Module):
    def __init__(self, cfg: SegFormerConfig, i: int, cin: int):
        super().__init__()
        dim, eps = cfg.embed_dims[i], cfg.ln_eps
        self.patch_embed = OverlapPatchEmbed(cin, dim, cfg.patch_sizes[i], cfg.strides[i], eps)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratios[i], eps) for _ in range(cfg.depths[i]))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        x, h, w = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x, h, w)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class MixVisionTransformer(nn.Module):
    """MiT encoder: (N, 3, H, W) -> four NCHW feature maps at 1/4, 1/8, 1/16, 1/32 resolution."""

    def __init__(self, cfg: SegFormerConfig):
        super().__init__()
        cins = (cfg.in_channels,) + tuple(cfg.embed_dims[:-1])
        self.stages = nn.ModuleList(Stage(cfg, i, cins[i]) for i in range(len(cfg.embed_dims)))

    def forward(self, x) -> List[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ConvBNReLU(nn.Sequential):
    """1x1 conv without bias + BatchNorm + ReLU (mmcv's ``ConvModule`` with BN)."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = nn.ReLU()


class SegFormerHead(nn.Module):
    """Both SegFormer decode heads; ``kind`` selects the branch layers and concat order.

    ``"mmseg"``: branch = ConvBNReLU, concat stage order. ``"all-mlp"``: branch = Linear with
    bias (no norm, no activation), concat reverse order. Then fuse (ConvBNReLU) and ``cls``.
    """

    def __init__(self, cfg: SegFormerConfig):
        super().__init__()
        self.kind = cfg.head
        if cfg.head == "mmseg":
            self.branches = nn.ModuleList(ConvBNReLU(c, cfg.width, cfg.bn_eps) for c in cfg.embed_dims)
        else:
            self.branches = nn.ModuleList(nn.Linear(c, cfg.width) for c in cfg.embed_dims)
        self.fuse = ConvBNReLU(cfg.width * len(cfg.embed_dims), cfg.width, cfg.bn_eps)
        self.cls = nn.Conv2d(cfg.width, cfg.num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]):
        size = feats[0].shape[2:]
        outs = []
        for i, (f, branch) in enumerate(zip(feats, self.branches)):
            if self.kind == "mmseg":
                y = branch(f)
            else:
                n, _, h, w = f.shape
                y = branch(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            if i > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        if self.kind == "all-mlp":
            outs = outs[::-1]
        return self.cls(self.fuse(torch.cat(outs, dim=1)))


class SegFormer(nn.Module):
    """SegFormer: normalised (N, 3, H, W) float32 -> class logits (N, K, ceil(H/4), ceil(W/4)).

    Args:
        cfg: the hyper-parameters (:class:`SegFormerConfig`); default MiT-B5 with mmseg's head.

    Input: RGB normalised by the training mean/std (ADE20K: mean (123.675, 116.28, 103.53),
    std (58.395, 57.12, 57.375) on 0..255), any H, W >= 1. Output logits before softmax, at the
    resolution of the first stage (stride 4, padding 3, kernel 7: ``(H - 1) // 4 + 1``).
    """

    def __init__(self, cfg: Optional[SegFormerConfig] = None):
        super().__init__()
        self.cfg = cfg or SegFormerConfig()
        self.backbone = MixVisionTransformer(self.cfg)
        self.head = SegFormerHead(self.cfg)

    def forward(self, x):
        return self.head(self.backbone(x))


def expected_keys(cfg: SegFormerConfig) -> List[str]:
    """The state-dict keys a :class:`SegFormer` of ``cfg`` has (without BN batch counters)."""
    with torch.device("meta"):
        m = SegFormer(cfg)
    return [k for k in m.state_dict() if not k.endswith("num_batches_tracked")]


def _infer_config(sd: Dict[str, Any], *, head: str, ln_eps: float, hf_config: Optional[dict],
                  meta_heads: Optional[Tuple[int, ...]]):
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
    """A :class:`SegFormer` holding the weights of an mmseg or HF state dict (strict).

    Args:
        sd: the checkpoint's ``{name: Tensor}`` in its family's names.
        family: ``"mmseg"`` or ``"hf"`` (:func:`~desra_fast.models.segformer_keys.detect_family`).
        hf_config: a Hugging Face ``config.json`` (heads and strides; checked against the shapes).
        meta: an mmseg checkpoint's ``meta`` (its config text gives the heads).
        source: names the checkpoint in errors.

    Returns:
        ``(model, names)``: the float32 model in eval mode, and the HF names version
        (``"4.x"``/``"5.x"``, None for mmseg).

    Raises:
        CheckpointError: missing / unexpected keys (listed), wrong shapes, non-float or
        non-finite tensors, a config.json that contradicts the weights.
    """
    if family == "mmseg":
        ours, unexpected = mmseg_filter_fn(sd)
        head, eps, names = "mmseg", 1e-6, None
    else:
        ours, unexpected, names = hf_filter_fn(sd)
        head, eps = "all-mlp", 1e-5
    cfg = _infer_config(ours, head=head, ln_eps=eps, hf_config=hf_config, meta_heads=_meta_num_heads(meta or {}))
    want = set(expected_keys(cfg))
    missing = sorted(want - set(ours))
    unexpected = sorted(unexpected) + sorted(set(ours) - want)
    if missing or unexpected:
        raise CheckpointError(f"{source}: the weights do not fit a SegFormer {cfg.variant_name} "
                              f"({family} layout): {_key_report(missing, unexpected)}")
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


def _detect(sd) -> bool:
    try:
        detect_family(sd)
    except CheckpointError:
        return False
    return True


def _load(sd, what: str, *, hf_config: Optional[dict] = None, meta: Optional[dict] = None):
    """The registry's loader: ``(model, info)`` with the family, names, variant, head, width,
    class count, LayerNorm eps and the full config."""
    family = detect_family(sd)
    model, names = build_segformer(sd, family=family, hf_config=hf_config if family == "hf" else None,
                                   meta=meta, source=what)
    cfg = model.cfg
    return model, dict(arch="SegFormer", format=family, names=names, variant=cfg.variant_name, head=cfg.head,
                       width=cfg.width, num_classes=cfg.num_classes, ln_eps=cfg.ln_eps, config=cfg.to_dict())


register(Architecture("SegFormer", "segmenter", _detect, _load))


__all__ = ["SegFormer", "SegFormerConfig", "MixVisionTransformer", "SegFormerHead", "MIT_VARIANTS",
           "HEAD_KINDS", "expected_keys", "build_segformer"]
