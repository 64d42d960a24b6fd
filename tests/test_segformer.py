"""SegFormer and load_segmenter against mmsegmentation's and transformers' own implementations.

Random weights (no ADE20K weights can be downloaded here) with perturbed norm statistics; the
checkpoints are written in the layouts the libraries write, then read by ``load_segmenter``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import segformer_refs as refs
from images import photo, real_pair

from desra_fast.models import CheckpointError, Segmenter, load_segmenter
from desra_fast.models.segmenter import label_png_bytes, logits_to_labels, rescale_size, save_label_png

TIE = 1e-4  # pixels whose top-2 logits are closer than this may legitimately differ


def _margin(logits: torch.Tensor) -> np.ndarray:
    top = logits.topk(2, dim=-3).values
    return (top[..., 0, :, :] - top[..., 1, :, :]).numpy()


@pytest.fixture(scope="module")
def mm_b0(tmp_path_factory):
    model, cfg = refs.mmseg_model("b0", channels=256, seed=1)
    path = tmp_path_factory.mktemp("mm") / "b0.pth"
    refs.save_mmseg_checkpoint(model, cfg, path, layout="1.x")
    return model, cfg, path


@pytest.mark.parametrize("variant,channels,shape", [("b0", 256, (2, 3, 67, 93)), ("b0", 768, (1, 3, 45, 61)),
                                                    ("b5", 256, (1, 3, 37, 50))])
def test_mmseg_logits_parity(variant, channels, shape, tmp_path):
    model, cfg = refs.mmseg_model(variant, channels=channels, seed=2)
    path = tmp_path / "m.pth"
    refs.save_mmseg_checkpoint(model, cfg, path, layout="1.x")
    seg = load_segmenter(path)
    assert seg.info["format"] == "mmseg" and seg.info["variant"] == variant
    assert seg.info["head"] == "mmseg" and seg.info["width"] == channels and seg.info["ln_eps"] == 1e-6
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.decode_head(model.backbone(x))
        ours = seg.module(x)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4, f"max |logit diff| {err:.3g} (logits up to {ref.abs().max().item():.3g})"
    away = _margin(ref) > TIE
    assert away.mean() > 0.95
    np.testing.assert_array_equal(ours.argmax(1).numpy()[away], ref.argmax(1).numpy()[away])


def _inference_model_labels(model, rgb):
    from mmseg.apis import inference_model

    res = inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))  # mmseg takes BGR arrays
    return res.pred_sem_seg.data[0].numpy(), res.seg_logits.data


@pytest.mark.parametrize("image", ["rocket_crop", "chelsea"])
def test_segment_equals_mmseg_inference_model(mm_b0, image):
    model, _, path = mm_b0
    if image == "rocket_crop":
        rgb = np.ascontiguousarray(real_pair("rocket")[0][:301, :457])  # odd sizes, upscaled by Resize
    else:
        rgb = photo("chelsea")[:299, :451]  # 299x451 -> 640x965
    want, logits = _inference_model_labels(model, rgb)
    seg = load_segmenter(path)
    got = seg.segment(rgb)
    assert got.shape == rgb.shape[:2] and got.dtype == np.uint8
    away = _margin(logits) > TIE
    assert away.mean() > 0.99 and len(np.unique(want)) >= 5
    np.testing.assert_array_equal(got[away], want[away])


def test_resize_rule_matches_mmcv():
    import mmcv

    refs.import_mmseg()
    for h, w in [(299, 451), (424, 640), (7, 5000), (4000, 13), (640, 2048), (1000, 1000), (2, 3)]:
        img = np.zeros((h, w, 3), np.uint8)
        want = mmcv.imrescale(img, (2048, 640)).shape[:2]
        nw, nh = rescale_size(w, h, (2048, 640))
        assert (nh, nw) == want


def test_checkpoint_layouts_and_trust(mm_b0, tmp_path):
    model, cfg, _ = mm_b0
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        ref = model.decode_head(model.backbone(x))
    for layout in ("0.x", "bare"):
        p = tmp_path / f"{layout}.pth"
        refs.save_mmseg_checkpoint(model, cfg, p, layout=layout)
        with torch.no_grad():
            assert (load_segmenter(p).module(x) - ref).abs().max().item() <= 1e-4
    p = tmp_path / "numpy_meta.pth"
    refs.save_mmseg_checkpoint(model, cfg, p, layout="0.x", numpy_meta=True)
    with pytest.raises(CheckpointError, match="trust=True"):
        load_segmenter(p)
    with torch.no_grad():
        assert (load_segmenter(p, trust=True).module(x) - ref).abs().max().item() <= 1e-4


def _hf_folder(tmp_path, names: str, width: int, fmt: str):
    from safetensors.torch import save_file

    m = refs.hf_model(width=width, seed=4)
    d = tmp_path / f"hf_{names}_{width}_{fmt}"
    d.mkdir()
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    if names == "4.x":
        sd = refs.hf4_state_dict(sd)
    (d / "config.json").write_text(json.dumps(m.config.to_dict()))
    if fmt == "safetensors":
        save_file(sd, str(d / "model.safetensors"))
    else:
        torch.save(sd, d / "pytorch_model.bin")
    return d


@pytest.mark.parametrize("names,width,fmt", [("4.x", 256, "safetensors"), ("5.x", 768, "safetensors"),
                                             ("4.x", 768, "bin")])
def test_hf_parity(names, width, fmt, tmp_path):
    from transformers import SegformerForSemanticSegmentation

    d = _hf_folder(tmp_path, names, width, fmt)
    ref_model = SegformerForSemanticSegmentation.from_pretrained(str(d)).eval()
    seg = load_segmenter(d if fmt == "safetensors" else d / "pytorch_model.bin")
    assert seg.info["format"] == "hf" and seg.info["names"] == names
    assert seg.info["head"] == "all-mlp" and seg.info["width"] == width and seg.info["variant"] == "b0"
    x = torch.randn(2, 3, 61, 83, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = ref_model(pixel_values=x).logits
        ours = seg.module(x)
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4, f"max |logit diff| {err:.3g}"


def test_hf_preprocessing_matches_image_processor(tmp_path):
    from transformers import SegformerImageProcessor

    d = _hf_folder(tmp_path, "5.x", 256, "safetensors")
    seg = load_segmenter(d, preprocess="hf")
    rgb = photo("coffee")[:397, :583]
    ref = SegformerImageProcessor()(images=rgb, return_tensors="pt")["pixel_values"]
    ours = torch.from_numpy(seg._prepare_numpy(rgb))[None]
    ours = (ours - seg.mean) / seg.std
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4
    labels = seg.segment(rgb)
    with torch.no_grad():
        want = F.interpolate(seg.module(ref), size=rgb.shape[:2], mode="bilinear", align_corners=False)
    away = _margin(want[0]) > TIE
    np.testing.assert_array_equal(labels[away], want[0].argmax(0).numpy()[away])


def test_bad_checkpoints(mm_b0, tmp_path):
    model, cfg, good = mm_b0
    sd = model.state_dict()
    p = tmp_path / "missing.pth"
    torch.save({k: v for k, v in sd.items() if k != "decode_head.fusion_conv.bn.weight"}, p)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): head\.fuse\.bn\.weight"):
        load_segmenter(p)
    p = tmp_path / "extra.pth"
    torch.save({**sd, "decode_head.extra.weight": torch.zeros(3)}, p)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): decode_head\.extra\.weight"):
        load_segmenter(p)
    p = tmp_path / "shape.pth"
    bad = dict(sd)
    bad["decode_head.fusion_conv.conv.weight"] = torch.zeros(256, 1000, 1, 1)
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match="shape"):
        load_segmenter(p)
    m19, cfg19 = refs.mmseg_model("b0", num_classes=19, seed=1)
    p = tmp_path / "cityscapes.pth"
    refs.save_mmseg_checkpoint(m19, cfg19, p)
    with pytest.raises(CheckpointError, match="19 classes, expected 150"):
        load_segmenter(p)
    assert load_segmenter(p, num_classes=None).num_classes == 19
    data = good.read_bytes()
    p = tmp_path / "truncated.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_segmenter(p)
    d = _hf_folder(tmp_path, "4.x", 256, "safetensors")
    st = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(st[: len(st) - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_segmenter(d)
    p = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, p)
    with pytest.raises(CheckpointError, match="no SegFormer weights"):
        load_segmenter(p)
    p = tmp_path / "nan.pth"
    bad = dict(sd)
    bad["decode_head.conv_seg.bias"] = torch.full((150,), float("nan"))
    torch.save(bad, p)
    with pytest.raises(CheckpointError, match="NaN"):
        load_segmenter(p)
    with pytest.raises(CheckpointError, match="no such file"):
        load_segmenter(tmp_path / "absent.pth")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_segmenter(tmp_path / "empty_dir")


def test_strip_mode_equals_interpolate():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 150, 9, 13, generator=g) * 5
    sizes = [(33, 47), (131, 187)]
    want = logits
    for s in sizes:
        want = F.interpolate(want, size=s, mode="bilinear", align_corners=False)
    got = logits_to_labels(logits, sizes, strip_bytes=1 << 20)  # forces ~20 strips
    away = _margin(want) > 1e-5
    assert away.mean() > 0.99
    np.testing.assert_array_equal(got.numpy()[away], want.argmax(1).numpy()[away])
    one = logits_to_labels(logits, sizes[1:], strip_bytes=1 << 20)
    w1 = F.interpolate(logits, size=sizes[1], mode="bilinear", align_corners=False)
    away = _margin(w1) > 1e-5
    np.testing.assert_array_equal(one.numpy()[away], w1.argmax(1).numpy()[away])


def test_segment_inputs_and_batches(mm_b0):
    _, _, path = mm_b0
    seg = load_segmenter(path, scale=(256, 128), batch_size=2)
    rgb = np.ascontiguousarray(real_pair("motorcycle")[0][:97, :131])
    one = seg.segment(rgb)
    batch = seg.segment(np.stack([rgb, rgb[::-1].copy(), rgb]))
    assert batch.shape == (3, 97, 131) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], one)
    np.testing.assert_array_equal(batch[2], one)
    # float and uint16 inputs of the same picture: the same labels up to resize rounding
    for other in (rgb.astype(np.float32) / 255, rgb.astype(np.uint16) * 257):
        assert (seg.segment(other) == one).mean() > 0.97
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    lt = seg.segment(t)
    assert lt.shape == (97, 131) and lt.dtype == torch.int64
    assert (lt.numpy() == one).mean() > 0.97
    assert seg.segment(t[None].float() / 255).shape == (1, 97, 131)
    with pytest.raises(ValueError, match="NaN"):
        seg.segment(np.full((20, 20, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="expected"):
        seg.segment(np.zeros((2, 3, 4, 5, 3), np.uint8))
    with pytest.raises(TypeError):
        seg.segment(np.zeros((20, 20, 3), bool))
    with pytest.raises(ValueError, match="preprocess"):
        Segmenter(seg.module, preprocess="pil")


def test_runner_replaces_module(mm_b0):
    _, _, path = mm_b0
    seg = load_segmenter(path, scale=(128, 64))
    calls = []

    def runner(x):
        calls.append(tuple(x.shape))
        return seg.module(x)

    alt = Segmenter(seg.module, info=seg.info, scale=(128, 64), runner=runner)
    rgb = photo("astronaut")[:77, :99]
    np.testing.assert_array_equal(alt.segment(rgb), seg.segment(rgb))
    assert calls == [(1, 3, 64, 82)]


def test_label_png_roundtrip(tmp_path):
    from PIL import Image

    from desra_fast.imageio import read_labels

    labels = (np.arange(37 * 53).reshape(37, 53) % 150).astype(np.uint8)
    save_label_png(tmp_path / "l.png", labels)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.png"), labels)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P" and im.getpalette()[3 * 2:3 * 3] == [6, 230, 230]  # sky
    with pytest.raises(ValueError):
        label_png_bytes(np.zeros((2, 2, 2), np.uint8))
