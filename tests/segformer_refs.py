"""Reference SegFormers for the tests: mmsegmentation's and transformers' own modules, random weights.

mmsegmentation 1.2.2 runs on CPU with mmcv-lite (no compiled ops): SegFormer never calls
``mmcv.ops``, but some mmseg modules import names from it at import time, so a stub module whose
attributes raise when used is registered first. Norm layers get perturbed affine parameters and
running statistics (a freshly initialised BN is the identity and would hide eps/order mistakes),
and the classifier is scaled up so that argmax margins are well above float32 noise.
"""
from __future__ import annotations

import os
import re
import sys
import types
import warnings

import torch

HF5_TO_HF4 = [  # transformers 5.x parameter names -> the 4.x names (written by save_pretrained)
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"segformer\.stages\.(\d+)\.blocks\.", r"segformer.encoder.block.\1."),
    (r"segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"attention\.q_proj", "attention.self.query"), (r"attention\.k_proj", "attention.self.key"),
    (r"attention\.v_proj", "attention.self.value"),
    (r"attention\.sequence_reduction\.sequence_reduction", "attention.self.sr"),
    (r"attention\.sequence_reduction\.layer_norm", "attention.self.layer_norm"),
    (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "mlp.dense1"), (r"mlp\.fc2", "mlp.dense2"),
    (r"layernorm_before", "layer_norm_1"), (r"layernorm_after", "layer_norm_2"),
    (r"decode_head\.linear_projections", "decode_head.linear_c"),
]


def import_mmseg():
    """Import mmseg's SegFormer pieces on mmcv-lite (stub ``mmcv.ops``); returns the mmseg module."""
    if "mmcv.ops" not in sys.modules:
        ops = types.ModuleType("mmcv.ops")

        def _missing(name):
            if name.startswith("__"):
                raise AttributeError(name)

            class _Stub:  # SegFormer never builds these
                def __init__(self, *a, **k):
                    raise RuntimeError(f"mmcv.ops.{name} is not available with mmcv-lite")

            _Stub.__name__ = name
            return _Stub

        ops.__getattr__ = _missing
        sys.modules["mmcv.ops"] = ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mmseg
        import mmseg.apis  # noqa: F401
        import mmseg.models  # noqa: F401
    return mmseg


def perturb_(model: torch.nn.Module, seed: int, cls_gain: float = 5.0, cls: str = "") -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        if cls:
            model.get_submodule(cls).weight.mul_(cls_gain)


def mmseg_model(variant: str = "b0", channels: int = 256, num_classes: int = 150, seed: int = 0,
                scale=(2048, 640)):
    """mmseg's EncoderDecoder from its shipped ADE20K config, random weights, test Resize(scale)."""
    mmseg = import_mmseg()
    from mmengine.config import Config
    from mmseg.apis import init_model

    names = {"b0": "segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
             "b5": "segformer_mit-b5_8xb2-160k_ade20k-640x640.py"}
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", "segformer", names[variant]))
    cfg.model.backbone.init_cfg = None
    cfg.model.pretrained = None
    cfg.model.decode_head.num_classes = num_classes
    cfg.model.decode_head.channels = channels
    cfg.model.decode_head.norm_cfg = dict(type="BN", requires_grad=True)
    for t in cfg.test_pipeline:
        if t["type"] == "Resize":
            t["scale"] = tuple(scale)
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_model(cfg, None, device="cpu")
    perturb_(model, seed, cls="decode_head.conv_seg")
    return model.eval(), cfg


def save_mmseg_checkpoint(model, cfg, path, *, layout: str = "1.x", numpy_meta: bool = False) -> None:
    """Write ``model`` as mmseg writes checkpoints: 1.x (mmengine) or 0.x (mmcv) ``meta``."""
    import numpy as np

    sd = model.state_dict()
    if layout == "1.x":
        meta = {"dataset_meta": {"classes": tuple(f"c{i}" for i in range(150))}, "cfg": cfg.pretty_text,
                "epoch": 0, "iter": 160000, "experiment_name": "t"}
        obj = {"meta": meta, "state_dict": sd, "message_hub": {}}
    elif layout == "0.x":
        meta = {"mmseg_version": "0.29.1", "config": cfg.pretty_text, "CLASSES": tuple(f"c{i}" for i in range(150)),
                "PALETTE": [[1, 2, 3]] * 150, "epoch": 0, "iter": 160000}
        if numpy_meta:
            meta["PALETTE"] = np.zeros((150, 3), np.uint8)
        obj = {"meta": meta, "state_dict": sd}
    else:  # bare state dict
        obj = sd
    torch.save(obj, path)


def hf_model(width: int = 256, seed: int = 0, num_labels: int = 150, **cfg_kw):
    """transformers' SegformerForSemanticSegmentation (MiT-B0 shapes by default), random weights."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(num_labels=num_labels, decoder_hidden_size=width, **cfg_kw)
    torch.manual_seed(seed)
    m = SegformerForSemanticSegmentation(cfg).eval()
    perturb_(m, seed, cls="decode_head.classifier")
    return m


def hf4_state_dict(sd):
    out = {}
    for k, v in sd.items():
        for a, b in HF5_TO_HF4:
            k = re.sub(a, b, k)
        out[k] = v.contiguous()
    return out
