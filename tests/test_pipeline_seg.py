"""The semantic adjustment in the jobs: ``desra-fast run --seg-model`` writes OUT/seg label maps and
masks equal to the float64 oracle with those labels; ``desra-fast detect --seg-model`` equals
``detect --seg`` on the label maps of the same segmenter. The segmenter is a tiny random
Hugging Face SegFormer (its accuracy is tested elsewhere; here only the wiring)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_pipeline import AREA, make_lr_folder, read_manifest, read_rgb_cv2, tiny_models  # noqa: E402,F401

from desra_fast import pipeline  # noqa: E402
from desra_fast.cli import main  # noqa: E402

from oracle import oracle_detect  # noqa: E402


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(num_labels=150, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                          num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():
        model.decode_head.classifier.weight.mul_(20)  # several classes per image
    d = tmp_path_factory.mktemp("segformer")
    model.save_pretrained(d)
    return str(d)


def test_run_and_detect_with_a_segmenter(tiny_models, tiny_segformer, tmp_path):
    root = tmp_path / "lr"
    make_lr_folder(root, n=3, seed=4, bad=False, formats=False)
    out = tmp_path / "out"
    res = pipeline.run(str(root), tiny_models["gan"], tiny_models["mse"], str(out), seg_model=tiny_segformer,
                       area_threshold=AREA, save_sr="png", threshold=0.8, progress=False)
    assert res.exit_code == 0 and res.written == 3
    classes = set()
    for r in read_manifest(out):
        k = r["lr"].rsplit(".", 1)[0]
        gan, mse = read_rgb_cv2(out / "gan" / f"{k}.png"), read_rgb_cv2(out / "mse" / f"{k}.png")
        seg = cv2.imread(str(out / "seg" / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        assert seg.dtype == np.uint8 and seg.shape == gan.shape[:2] and seg.max() < 150
        classes |= set(np.unique(seg).tolist())
        mask = cv2.imread(str(out / r["path"]), cv2.IMREAD_UNCHANGED) == 255
        np.testing.assert_array_equal(mask, oracle_detect(gan.astype(np.float64), mse.astype(np.float64), seg,
                                                          threshold=0.8, area_threshold=AREA))
    assert len(classes) > 1

    a, b = tmp_path / "det_model", tmp_path / "det_maps"
    segs = tmp_path / "segs"
    from desra_fast.models import load_segmenter

    seg = load_segmenter(tiny_segformer)
    for p in (out / "gan").rglob("*.png"):
        rel = p.relative_to(out / "gan")
        (segs / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(segs / rel), seg.segment(read_rgb_cv2(p)))
    common = ["--gan", str(out / "gan"), "--mse", str(out / "mse"), "--area-threshold", str(AREA),
              "--threshold", "0.8", "--no-progress"]
    assert main(["detect", *common, "--out", str(a), "--seg-model", tiny_segformer]) == 0
    assert main(["detect", *common, "--out", str(b), "--seg", str(segs)]) == 0
    ma = {str(p.relative_to(a)): p.read_bytes() for p in a.rglob("*.png")}
    assert ma and ma == {str(p.relative_to(b)): p.read_bytes() for p in b.rglob("*.png")}
    assert main(["detect", *common, "--out", str(tmp_path / "c"), "--seg", str(segs), "--seg-model",
                 tiny_segformer]) == 1
