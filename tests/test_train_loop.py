"""The fine-tune loop: deterministic data, SIGKILL + resume bit-identical, the final model's
official layout, EMA in the loop, refused resumes, DDP under torchrun (gloo, CPU) vs 1 process.

The runs use a tiny random RRDBNet (1 block, 8 features) and a small discriminator on 32-px HR
patches, so each run takes a second or two; they execute in subprocesses (this file is also the
worker: ``python tests/test_train_loop.py OUT [--kill-after-checkpoint N] [--kill-at-g-step N]``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch") if __name__ != "__main__" else __import__("torch")

HERE = Path(__file__).resolve()
ITERS, CKPT_EVERY, BATCH, PATCH = 5, 2, 4, 32
KEYS = ("a", "b", "c")


def make_folders(root: Path, seed: int = 0) -> dict:
    """Small LR / GAN / MSE / mask folders: GAN = nearest x4 of LR plus noise, MSE = bilinear x4."""
    import cv2

    rng = np.random.default_rng(seed)
    dirs = {r: root / r for r in ("lr", "gan", "mse", "mask")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(KEYS):
        h, w = 12 + 2 * i, 14
        lr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        big = (w * 4, h * 4)
        gan = np.clip(cv2.resize(lr, big, interpolation=cv2.INTER_NEAREST).astype(int)
                      + rng.integers(-20, 21, (h * 4, w * 4, 3)), 0, 255).astype(np.uint8)
        mse = cv2.resize(lr, big, interpolation=cv2.INTER_LINEAR)
        mask = np.zeros((h * 4, w * 4), np.uint8)
        mask[8:30, 10:40] = 255
        for name, img in (("lr", lr), ("gan", gan), ("mse", mse)):
            cv2.imwrite(str(dirs[name] / f"{key}.png"), np.ascontiguousarray(img[:, :, ::-1]))
        cv2.imwrite(str(dirs["mask"] / f"{key}.png"), mask)
    return dirs


def tiny_generator(seed: int = 0):
    from desra_fast.models import RRDBNet

    torch.manual_seed(seed)
    return RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)


def tiny_discriminator(seed: int = 1):
    from desra_fast.train import UNetDiscriminatorSN

    torch.manual_seed(seed)
    return UNetDiscriminatorSN(3, 8)


def worker(argv) -> int:
    """Run one fine-tune in this process (the subprocess side of the tests)."""
    import argparse

    from desra_fast.train import FinetuneConfig, FinetuneData, finetune, load_vgg19, pair_folders

    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-after-checkpoint", type=int)
    p.add_argument("--kill-at-g-step", type=int)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--perceptual", action="store_true")
    p.add_argument("--gan-weight", type=float, default=0.1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--netd-warmup", type=int)
    p.add_argument("--gan-outside", type=float, default=1.0)
    p.add_argument("--outside-target", default="model")
    p.add_argument("--outside-weight", type=float, default=1.0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    d = Path(a.data)
    data = FinetuneData(pair_folders(d / "lr", d / "gan", d / "mse", d / "mask"), 4, patch=PATCH, seed=3)
    cfg = FinetuneConfig(iters=a.iters, ckpt_every=CKPT_EVERY, batch=a.batch, patch=PATCH, ema_decay=0.999,
                         perceptual_weight=1.0 if a.perceptual else 0.0, gan_weight=a.gan_weight,
                         keep_checkpoints=3, precision=a.precision, netd_warmup=a.netd_warmup,
                         gan_outside=a.gan_outside, outside_target=a.outside_target,
                         outside_weight=a.outside_weight)

    def hooks(event, it):
        if (event == "checkpoint" and it == a.kill_after_checkpoint) or (
                event == "g_step" and it == a.kill_at_g_step):
            os.kill(os.getpid(), signal.SIGKILL)

    vgg = load_vgg19() if a.perceptual else None
    finetune(tiny_generator(), data, a.out, cfg, vgg=vgg, net_d=tiny_discriminator(), resume=a.resume,
             progress=False, hooks=hooks)
    return 0


def run_worker(data: Path, out: Path, *extra, check=True, torchrun: int = 0):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
               "--master_port", str(29500 + os.getpid() % 1000), str(HERE), str(data), str(out), *extra]
    else:
        cmd = [sys.executable, str(HERE), str(data), str(out), *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"worker failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def final_state(out: Path) -> dict:
    return torch.load(out / "net_g_final.pth", map_location="cpu", weights_only=True)


def last_checkpoint(out: Path) -> dict:
    from desra_fast.train import latest_checkpoint

    return latest_checkpoint(out / "checkpoints")


def assert_bit_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        ta, tb = a[k], b[k]
        assert ta.dtype == tb.dtype and ta.shape == tb.shape, f"{what}: {k}"
        bits = lambda t: t.reshape(-1).view(torch.uint8) if t.dtype.is_floating_point else t  # noqa: E731
        assert torch.equal(bits(ta), bits(tb)), f"{what}: {k} differs"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftdata")
    make_folders(root)
    return root


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """An uninterrupted run (with the perceptual loss when the VGG19 file is installed)."""
    from desra_fast.train import find_vgg19

    out = tmp_path_factory.mktemp("ref")
    extra = ("--perceptual",) if find_vgg19() is not None else ()
    run_worker(data_dir, out, *extra)
    return out, extra


# ------------------------------------------------------------------ data

def test_data_pairs_crops_and_determinism(data_dir):
    from desra_fast.repair import pseudo_gt
    from desra_fast.imageio import read_mask, read_rgb
    from desra_fast.train import FinetuneData, pair_folders

    samples = pair_folders(data_dir / "lr", data_dir / "gan", data_dir / "mse", data_dir / "mask")
    assert [s.key for s in samples] == list(KEYS)
    d1 = FinetuneData(samples, 4, patch=PATCH, seed=7)
    d2 = FinetuneData(samples, 4, patch=PATCH, seed=7)
    d3 = FinetuneData(samples, 4, patch=PATCH, seed=8)
    same = all(np.array_equal(d1.sample(k)[1], d2.sample(k)[1]) for k in range(10))
    assert same
    assert not all(np.array_equal(d1.sample(k)[1], d3.sample(k)[1]) for k in range(10))
    # every sample's GT patch is found in its image's pseudo-GT under some flip/rotation at the
    # position 4x its LR patch's, and an epoch visits every image once
    gts = {s.key: pseudo_gt(read_rgb(s.gan), read_rgb(s.mse), read_mask(s.mask)).astype(np.float32) / 255
           for s in samples}
    lrs = {s.key: read_rgb(s.lr).astype(np.float32) / 255 for s in samples}
    seen = []
    for k in range(len(samples)):
        lr, gt = d1.sample(k)
        assert lr.shape == (3, 8, 8) and gt.shape == (3, 32, 32) and lr.dtype == np.float32
        found = None
        for key in KEYS:
            L, G = lrs[key], gts[key]
            for t in range(L.shape[0] - 7):
                for l in range(L.shape[1] - 7):
                    cand_lr = L[t:t + 8, l:l + 8].transpose(2, 0, 1)
                    cand_gt = G[4 * t:4 * t + 32, 4 * l:4 * l + 32].transpose(2, 0, 1)
                    for flip in _dihedral_subset():
                        if np.array_equal(flip(cand_lr), lr) and np.array_equal(flip(cand_gt), gt):
                            found = key
        assert found is not None, f"sample {k} is not a paired crop"
        seen.append(found)
    assert sorted(seen) == sorted(KEYS)


def _dihedral_subset():
    ops = []
    for h in (False, True):
        for v in (False, True):
            for r in (False, True):
                def op(a, h=h, v=v, r=r):
                    if h:
                        a = a[:, :, ::-1]
                    if v:
                        a = a[:, ::-1, :]
                    return a.transpose(0, 2, 1) if r else a
                ops.append(op)
    return ops


def test_rank_shares_make_the_single_process_batch(data_dir):
    from desra_fast.train import FinetuneData, pair_folders

    d = FinetuneData(pair_folders(*(data_dir / r for r in ("lr", "gan", "mse", "mask"))), 4, patch=PATCH)
    lr1, gt1 = d.batch(3, 4)
    parts = [d.batch(3, 4, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), lr1)
    assert torch.equal(torch.cat([p[1] for p in parts]), gt1)


def test_data_errors_name_the_problem(tmp_path, data_dir):
    import cv2

    from desra_fast.train import DataError, FinetuneData, pair_folders

    with pytest.raises(DataError, match="not a directory"):
        pair_folders(tmp_path / "nope", data_dir / "gan", data_dir / "mse", data_dir / "mask")
    bad = tmp_path / "bad"
    dirs = make_folders(bad)
    cv2.imwrite(str(dirs["mask"] / "b.png"), np.zeros((5, 5), np.uint8))
    samples = pair_folders(*dirs.values())
    with pytest.raises(DataError, match="b: mask .* expected"):
        FinetuneData(samples, 4, patch=PATCH)
    (dirs["gan"] / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="(?s)2 of 3 .*b: mask.*c: .*c.png"):
        FinetuneData(pair_folders(*dirs.values()), 4, patch=PATCH)
    with pytest.raises(DataError, match="smaller than the LR patch"):
        FinetuneData(samples[:1], 4, patch=64)


# ------------------------------------------------------------------ resume

def test_sigkill_after_checkpoint_then_resume_is_bit_identical(data_dir, reference_run, tmp_path):
    ref, extra = reference_run
    out = tmp_path / "killed"
    # killed right after the checkpoint of iteration 2 is on disk
    r = run_worker(data_dir, out, *extra, "--kill-after-checkpoint", "2", check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (out / "net_g_final.pth").exists()
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["iter_00000002.pth"]
    run_worker(data_dir, out, *extra, "--resume")
    a, b = final_state(ref), final_state(out)
    assert_bit_identical(a["params"], b["params"], "params")
    assert_bit_identical(a["params_ema"], b["params_ema"], "params_ema")
    ca, cb = last_checkpoint(ref), last_checkpoint(out)
    assert ca["iteration"] == cb["iteration"] == ITERS
    assert_bit_identical(ca["net_d"], cb["net_d"], "net_d")
    for opt in ("optimizer_g", "optimizer_d"):
        for pid, st in ca[opt]["state"].items():
            assert_bit_identical(st, cb[opt]["state"][pid], opt)


def test_sigkill_mid_iteration_and_torn_checkpoint_resume_bit_identical(data_dir, reference_run, tmp_path):
    ref, extra = reference_run
    out = tmp_path / "killed"
    # killed in iteration 5 between the generator and the discriminator step (after checkpoint 4)
    r = run_worker(data_dir, out, *extra, "--kill-at-g-step", "5", check=False)
    assert r.returncode == -signal.SIGKILL
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["iter_00000002.pth", "iter_00000004.pth"]
    # the newest checkpoint torn (as a disk or copy error would leave it) and a stale temp file
    data = ckpts[-1].read_bytes()
    ckpts[-1].write_bytes(data[: len(data) // 2])
    (out / "checkpoints" / ".iter_00000006.pth.123.0.desra-tmp").write_bytes(b"partial")
    r = run_worker(data_dir, out, *extra, "--resume")
    assert "skipping" in r.stderr and "iter_00000004.pth" in r.stderr
    assert not list((out / "checkpoints").glob("*.desra-tmp"))
    a, b = final_state(ref), final_state(out)
    assert_bit_identical(a["params"], b["params"], "params")
    assert_bit_identical(a["params_ema"], b["params_ema"], "params_ema")


def in_process(data: Path, out: Path, *extra):
    threads = torch.get_num_threads()
    try:
        return worker([str(data), str(out), *extra])
    finally:
        torch.set_num_threads(threads)


def test_finished_run_resumed_is_a_noop_and_other_settings_are_refused(data_dir, reference_run, tmp_path):
    import shutil

    from desra_fast.train import CheckpointError

    ref, extra = reference_run
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.pth")}
    in_process(data_dir, out, *extra, "--resume")
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.pth")}
    assert before == after
    with pytest.raises(CheckpointError, match="--resume"):  # a used folder without --resume
        in_process(data_dir, out, *extra)
    with pytest.raises(CheckpointError, match="batch"):
        in_process(data_dir, out, *extra, "--resume", "--batch", "2")
    (out / "net_g_final.pth").unlink()  # killed between the last checkpoint and the final file
    in_process(data_dir, out, *extra, "--resume")
    assert_bit_identical(final_state(ref)["params_ema"], final_state(out)["params_ema"], "params_ema")


def test_final_model_official_layout_loads_strictly(reference_run):
    from desra_fast.models import RRDBNet

    ref, _ = reference_run
    sd = final_state(ref)
    assert set(sd) == {"params_ema", "params"}
    names = set(sd["params_ema"])
    expected = {f"{m}.{p}" for m in ("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last")
                for p in ("weight", "bias")}
    expected |= {f"body.0.rdb{r}.conv{c}.{p}" for r in (1, 2, 3) for c in range(1, 6) for p in ("weight", "bias")}
    assert names == expected
    for key in ("params_ema", "params"):
        net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
        net.load_state_dict(sd[key], strict=True)
    # the generator actually moved, and the EMA lags it
    init = tiny_generator().state_dict()
    assert any(not torch.equal(init[k], sd["params"][k]) for k in init)
    assert any(not torch.equal(sd["params_ema"][k], sd["params"][k]) for k in init)


def test_ema_in_the_loop_after_one_iteration(data_dir, tmp_path):
    out = tmp_path / "one"
    in_process(data_dir, out, "--iters", "1")
    sd = final_state(out)
    init = tiny_generator().state_dict()
    for k, p0 in init.items():
        want = 0.999 * p0.double() + 0.001 * sd["params"][k].double()
        torch.testing.assert_close(sd["params_ema"][k].double(), want, rtol=0, atol=1e-7)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["iter"] == 1 and {"l_pix", "l_gan", "l_d_real", "l_d_fake"} <= set(log[-1])


# ------------------------------------------------------------------ multi-process

def test_ddp_two_processes_equal_one_process(data_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_worker(data_dir, one, "--iters", "2")
    run_worker(data_dir, two, "--iters", "2", torchrun=2)
    a, b = final_state(one), final_state(two)
    for key in ("params", "params_ema"):
        for k in a[key]:
            torch.testing.assert_close(b[key][k], a[key][k], rtol=0, atol=2e-6, msg=f"{key}.{k}")
    ca, cb = last_checkpoint(one), last_checkpoint(two)
    for k in ca["net_d"]:
        torch.testing.assert_close(cb["net_d"][k], ca["net_d"][k], rtol=0, atol=2e-6, msg=f"net_d.{k}")


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
