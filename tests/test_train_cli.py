"""``desra-fast finetune`` / ``evaluate-finetune`` on tiny random RRDBNets (folder and --run forms,
resume no-op, clear errors), and the fine-tuned file loading through ``load_sr``."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_loop import make_folders, tiny_generator  # noqa: E402

from desra_fast.cli import main  # noqa: E402

COMMON = ["--iters", "2", "--batch", "2", "--patch", "32", "--ckpt-every", "1", "--perceptual-weight", "0",
          "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftcli")
    dirs = make_folders(root / "data")
    model = root / "tiny.pth"
    torch.save({"params_ema": tiny_generator().state_dict()}, model)
    return root, dirs, model


def test_finetune_folders_resume_and_load_sr(setup, capsys):
    from desra_fast.models import load_sr

    root, dirs, model = setup
    out = root / "ft"
    args = ["finetune", "--model", str(model), "--lr", str(dirs["lr"]), "--gan", str(dirs["gan"]),
            "--mse", str(dirs["mse"]), "--mask", str(dirs["mask"]), "--out", str(out), *COMMON]
    assert main(args) == 0
    assert (out / "net_g_final.pth").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_00000001.pth", "iter_00000002.pth"]
    assert main(args + ["--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert main(args) == 1  # used folder without --resume
    assert "--resume" in capsys.readouterr().err
    m = load_sr(out / "net_g_final.pth")
    assert m.info["arch"] == "RRDBNet" and m.scale == 4
    sd = torch.load(out / "net_g_final.pth", weights_only=True)["params_ema"]
    assert all(torch.equal(m.module.state_dict()[k], v) for k, v in sd.items())


def test_finetune_from_run_layout_with_list(setup, tmp_path):
    root, dirs, model = setup
    run = tmp_path / "run"
    for src, dst in (("gan", "gan"), ("mse", "mse"), ("mask", "masks")):
        shutil.copytree(dirs[src], run / dst)
    lst = tmp_path / "train.txt"
    lst.write_text("a.png\nc.png\n")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(model), "--run", str(run), "--list", str(lst),
                 "--lr", str(dirs["lr"]), "--out", str(out), *COMMON]) == 0
    assert (out / "net_g_final.pth").is_file()
    # without --lr the run's LR folder must be recorded: a clear error otherwise
    assert main(["finetune", "--model", str(model), "--run", str(run), "--out", str(tmp_path / "x"), *COMMON]) == 1


def test_finetune_errors(setup, tmp_path, capsys, monkeypatch):
    root, dirs, model = setup
    base = ["finetune", "--lr", str(dirs["lr"]), "--gan", str(dirs["gan"]), "--mse", str(dirs["mse"]),
            "--mask", str(dirs["mask"]), "--out", str(tmp_path / "o")]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert main(base + ["--model", str(bad), *COMMON]) == 1
    assert "bad.pth" in capsys.readouterr().err
    # the perceptual loss without any VGG19 weights: refused with the way out
    monkeypatch.setenv("DESRA_FAST_VGG19", str(tmp_path / "missing.h5"))
    assert main(base + ["--model", str(model), "--iters", "1", "--batch", "2", "--patch", "32", "--quiet"]) == 1
    assert "missing.h5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "--model", str(model), "--out", str(tmp_path / "o")])


def test_evaluate_finetune_reports_and_pictures(setup, tmp_path):
    import cv2

    root, dirs, model = setup
    torch.manual_seed(5)
    other = tmp_path / "other.pth"
    torch.save({"params_ema": tiny_generator(seed=9).state_dict()}, other)
    out = tmp_path / "ev"
    assert main(["evaluate-finetune", "--before", str(model), "--after", str(other), "--lr", str(dirs["lr"]),
                 "--mse-model", str(model), "--out", str(out), "--area-threshold", "0", "--threshold", "1.01",
                 "--json"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["images"] == 3
    # threshold above every D: before (== MSE model) and after both detect the full valid region
    assert rep["area_before"] > 0.3 and rep["removal_rate"] == 0.0
    pic = cv2.imread(str(out / "compare" / "a.jpg"))
    lr = cv2.imread(str(dirs["lr"] / "a.png"))
    assert pic.shape[1] == 3 * 4 * lr.shape[1] + 2 * 8 and pic.shape[0] > 4 * lr.shape[0]
    assert set(rep["per_image"]["a"]) >= {"area_before", "area_after", "psnr_gan_vs_mse_outside_after"}
    before = cv2.imread(str(out / "before" / "a.png"), cv2.IMREAD_GRAYSCALE)
    assert before.shape == (4 * lr.shape[0], 4 * lr.shape[1]) and set(np.unique(before)) <= {0, 255}


def test_non_finite_loss_stops_with_a_clear_error(setup, tmp_path):
    from desra_fast.train import FinetuneConfig, FinetuneData, finetune, pair_folders

    root, dirs, model = setup
    data = FinetuneData(pair_folders(dirs["lr"], dirs["gan"], dirs["mse"], dirs["mask"]), 4, patch=32)
    g = tiny_generator()
    with torch.no_grad():
        g.conv_last.bias.fill_(float("nan"))
    cfg = FinetuneConfig(iters=2, ckpt_every=1, batch=2, patch=32, perceptual_weight=0)
    with pytest.raises(FloatingPointError, match="iteration 1: non-finite"):
        finetune(g, data, tmp_path / "o", cfg, progress=False)
    assert not (tmp_path / "o" / "net_g_final.pth").exists()
