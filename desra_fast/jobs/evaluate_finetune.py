"""The evaluation of a fine-tune behind ``desra-fast evaluate-finetune``, on the crash-safe engine.

For every LR validation image (``<key>`` = its path relative to the LR folder without extension,
posix separators), in fp32 whatever precision the fine-tune trained in: GAN-SR with the model
before and after fine-tuning and MSE-SR with the pixel-loss model, detection on both GAN-SR
outputs against MSE-SR, then the figures of :func:`desra_fast.metrics.finetune_figures`. Outputs
under ``OUT``::

    sr/before/<key>.png  sr/after/<key>.png  sr/mse/<key>.png    the three SR images (8-bit RGB)
    after/<key>.png  before/<key>.png                            the masks (0/255, SR size)
    compare/<key>.jpg            before (regions tinted) | after (its regions) | MSE-SR
    manifest.jsonl               one line per image: its figures and the sums pooled from them
    report.json                  the pooled and per-image figures (:func:`build_report`)

``before/<key>.png`` is each image's completion marker (written last). The per-image figures are
computed from 8-bit images and masks only, so an image whose manifest line was lost (the job was
killed between the rename and the append) gets them back from its PNGs, bit for bit; and
``report.json`` is rebuilt from the manifest at every run and holds no timing, so a run killed
at any moment and rerun writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import imageio, metrics
from .engine import FolderJob, Item, JobResult, RunOptions, describe, run_job
from .store import JOB_FILE, MANIFEST, JobError, read_manifest

#: Relative output folders (see the module docstring).
SR_DIRS = {"before": "sr/before", "after": "sr/after", "mse": "sr/mse"}
REPORT = "report.json"
#: ``--after-key`` choices: the fine-tune's EMA weights or its raw generator weights.
AFTER_KEYS = ("params_ema", "params")

#: Pooled figures, in the order report.json lists them (names shared with ``desra-fast report``).
POOLED = ("area_before", "area_after", "area_change", "regions_before", "removed_regions", "removal_rate",
          "images_with_new_regions", "addition_rate", "psnr_after_vs_before_outside", "texture_kept",
          "psnr_gan_vs_mse_outside_before", "psnr_gan_vs_mse_outside_after")


class EvaluateFinetuneJob(FolderJob):
    """``desra-fast evaluate-finetune`` as a :class:`~desra_fast.jobs.FolderJob`.

    Args:
        lr_dir: folder of LR validation images (searched recursively).
        out_dir: the output folder ``OUT``.
        before, after, mse_model: anything :func:`desra_fast.models.load_sr` reads (file or
            packaged name): the GAN model before and after fine-tuning and the MSE model.
        after_key: checkpoint entry of ``after`` to evaluate, ``"params_ema"`` or ``"params"``;
            None: what ``load_sr`` picks (``params_ema``, then ``params``, then a bare state dict).
        keys: only these image keys (``desra_fast.utils.read_list`` of a ``--list`` file).
        gt_dir: human-labelled masks (SR size, 0/255) for IoU figures in the report.
        threshold, area_threshold, window: detection settings (:func:`desra_fast.detect`).
        tile: SR tile size in LR pixels (0: whole image). device: torch device of the SR models.
        reuse_sr: another evaluation's ``OUT`` made with the same ``before`` and ``mse_model``
            (and runtime, tile): its ``sr/before`` and ``sr/mse`` images are read instead of
            computed again (two thirds of the SR work when one base model is evaluated against
            several fine-tunes); images it lacks are computed.
        runtime: ``"torch"`` (default: the torch modules in fp32, the reference) or another
            :data:`desra_fast.runtime.RUNTIMES` entry, always asked for fp32 (OpenVINO on CPU:
            within one 8-bit level of torch, faster).
    """

    name = "evaluate-finetune"
    noun = "image"
    task_max_items = 2
    max_batch = 1

    def __init__(self, lr_dir: str, out_dir: str, before: str, after: str, mse_model: str, *,
                 after_key: Optional[str] = None, keys: Optional[List[str]] = None, gt_dir: Optional[str] = None,
                 threshold: float = 0.7, area_threshold: int = 4000, window: str = "gaussian", tile: int = 0,
                 device: str = "cpu", runtime: str = "torch", reuse_sr: Optional[str] = None):
        self.lr_dir, self.out_dir = lr_dir, out_dir
        self.sources = {"before": before, "after": after, "mse": mse_model}
        self.after_key, self.keys, self.gt_dir = after_key, keys, gt_dir
        self.detect_options = dict(threshold=float(threshold), area_threshold=int(area_threshold), window=window)
        self.tile, self.device, self.runtime = int(tile), device, runtime
        self.models: Dict[str, Any] = {}
        self._items: Optional[List[Item]] = None
        self.paths: Dict[str, str] = {}
        self.reuse_sr = reuse_sr
        self._fingerprints: Dict[str, str] = {}

    # ------------------------------------------------------------------ before any item
    def validate(self) -> None:
        if not os.path.isdir(self.lr_dir):
            raise JobError(f"--lr {self.lr_dir}: not a directory")
        if os.path.realpath(self.lr_dir) == os.path.realpath(self.out_dir):
            raise JobError(f"--out {self.out_dir} is the LR folder; give the evaluation a folder of its own")
        if self.gt_dir is not None and not os.path.isdir(self.gt_dir):
            raise JobError(f"--gt {self.gt_dir}: not a directory")
        if self.after_key is not None and self.after_key not in AFTER_KEYS:
            raise JobError(f"--after-key must be one of {', '.join(AFTER_KEYS)}, got {self.after_key!r}")
        self._load_models()
        if self.reuse_sr is not None:
            self._check_reuse()

    def _check_reuse(self) -> None:
        """Refuse a ``reuse_sr`` folder whose before / MSE images come from other models or SR
        settings (they would silently change the figures)."""
        path = Path(self.reuse_sr) / JOB_FILE
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JobError(f"--reuse-sr {self.reuse_sr}: not an evaluate-finetune output folder "
                           f"(cannot read {path.name}: {getattr(exc, 'strerror', None) or exc})") from None
        ours = self.settings()
        differ = [k for k in ("before", "mse", "sr_precision", "runtime", "tile")
                  if not isinstance(theirs, dict) or theirs.get(k) != ours[k]]
        if differ:
            raise JobError(f"--reuse-sr {self.reuse_sr}: its SR images were made with other {', '.join(differ)} "
                           f"(the --before / --mse-model files or SR settings differ)")

    def _load_models(self) -> None:
        """The three models, loaded once (also when every image is done: the report names the
        key the after model was read from, and a broken model file is reported before any work)."""
        if self.models:
            return
        from ..models import load_sr
        from .sources import resolve_model

        flags = {"before": "--before", "after": "--after", "mse": "--mse-model"}
        for name, src in self.sources.items():
            path = self.paths[name] = resolve_model(src, flags[name])
            opts = {"key": self.after_key} if name == "after" and self.after_key is not None else {}
            if self.runtime != "torch":
                opts["precision"] = "fp32"  # the evaluation compares models, not precisions
            try:
                self.models[name] = load_sr(path, device=self.device, runtime=self.runtime, **opts)
            except Exception as exc:
                self.models = {}
                raise JobError(f"{flags[name]} {src}: cannot load the model: {describe(exc)}") from exc
        used = self.models["after"].info.get("checkpoint_key")
        if self.after_key is not None and used != self.after_key:
            self.models = {}
            raise JobError(f"--after-key {self.after_key}: {self.sources['after']} is not a checkpoint with "
                           f"entries; --after-key applies to .pth/.pt/.ckpt files")
        scales = {k: m.scale for k, m in self.models.items()}
        if len(set(scales.values())) != 1:
            self.models = {}
            raise JobError("the models upscale by different factors: "
                           + ", ".join(f"{flags[k]} x{s}" for k, s in scales.items()))

    @property
    def after_key_used(self) -> Optional[str]:
        """The checkpoint entry the after model was read from (None: a file without entries)."""
        self._load_models()
        return self.models["after"].info.get("checkpoint_key")

    def settings(self) -> Dict[str, Any]:
        from .sources import file_fingerprint

        self._load_models()
        if not self._fingerprints:  # hashed once: validate (--reuse-sr) and the engine both ask
            self._fingerprints = {name: file_fingerprint(path) for name, path in self.paths.items()}
        out: Dict[str, Any] = dict(self._fingerprints)
        out.update(after_key=self.after_key_used, sr_precision="fp32", runtime=self.runtime, tile=self.tile,
                   **self.detect_options)
        return out

    def exclude(self):
        return [self.out_dir]

    def plan(self) -> List[Item]:
        found = imageio.list_images(self.lr_dir, exclude=self.exclude())
        # a listed image without its LR file is an error of that image, not a silent omission
        keys = sorted(found) if self.keys is None else sorted(set(self.keys))
        items = []
        for key in keys:
            rels = found.get(key, [])
            err = (f"listed in --list, but no {key}.* in the LR folder" if not rels else
                   f"ambiguous name: several LR files for {key}: {sorted(rels)}" if len(rels) > 1 else None)
            outputs = tuple(f"{d}/{key}.png" for d in SR_DIRS.values()) + (
                f"after/{key}.png", f"compare/{key}.jpg", f"before/{key}.png")
            rel = rels[0] if rels else None
            items.append(Item(key, outputs, {"input": rel}, (os.path.join(self.lr_dir, rel),) if rel else (), err))
        self._items = items  # the report covers what this run planned, even if the folder changes
        return items

    # ------------------------------------------------------------------ per item
    def setup(self) -> None:
        self._load_models()

    def read(self, item: Item) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """(LR image, {"before"/"mse": SR image read from ``reuse_sr``})."""
        lr = imageio.read_rgb(item.inputs[0])
        reused = {}
        for k in ("before", "mse") if self.reuse_sr is not None else ():
            p = Path(self.reuse_sr) / SR_DIRS[k] / f"{item.key}.png"
            try:
                reused[k] = imageio.read_rgb(p) if p.is_file() else None
            except ValueError:  # unreadable: computed again instead
                reused[k] = None
            if reused[k] is None or reused[k].dtype != np.uint8 or reused[k].shape[:2] != (
                    lr.shape[0] * self.scale, lr.shape[1] * self.scale):
                del reused[k]
        return lr, reused

    @property
    def scale(self) -> int:
        return self.models["before"].scale

    def info(self, item: Item, data) -> Dict[str, Any]:
        return {"size": list(data[0].shape[:2])}

    def compute(self, items: List[Item], datas: List[np.ndarray]) -> List[Any]:
        from ..api import detect
        from ..overlay import to_uint8

        out = []
        for lr, reused in datas:
            # fp32 whatever the fine-tune trained in; 16-bit LR images give 8-bit SR images (the
            # figures are defined on 8-bit images, and the saved PNGs must reproduce them)
            sr = {k: reused[k] if k in reused else to_uint8(m.upscale(lr, tile=self.tile, precision="fp32"))
                  for k, m in self.models.items()}
            if not (sr["before"].shape == sr["after"].shape == sr["mse"].shape):
                raise ValueError("the SR images differ in size: " + ", ".join(
                    f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in sr.items()))
            masks = {k: detect(sr[k], sr["mse"], **self.detect_options) for k in ("before", "after")}
            out.append((sr, masks))
        return out

    def encode(self, item: Item, data, result) -> Tuple[List[Tuple[str, bytes]], Dict[str, Any]]:
        sr, masks = result
        fig = metrics.finetune_figures(sr["before"], sr["after"], sr["mse"], masks["before"], masks["after"])
        files = [(item.outputs[i], _png(sr[k])) for i, k in enumerate(SR_DIRS)]
        files.append((item.outputs[3], imageio.mask_to_png_bytes(masks["after"])))
        files.append((item.outputs[4], imageio.rgb_to_jpeg_bytes(compare_picture(sr, masks), 90)))
        files.append((item.outputs[5], imageio.mask_to_png_bytes(masks["before"])))
        return files, fig

    def recover(self, item: Item, out_dir: Path) -> Dict[str, Any]:
        return figures_from_outputs(out_dir, item.key)

    def summary_lines(self) -> List[str]:
        return [f"  report:   {os.path.join(self.out_dir, REPORT)}",
                f"  pictures: {os.path.join(self.out_dir, 'compare')}/",
                f"  manifest: {os.path.join(self.out_dir, 'manifest.jsonl')}"]


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV does not fail on (H, W, 3) uint8
        raise ValueError("PNG encoding of an SR image failed")
    return buf.tobytes()


def figures_from_outputs(out_dir, key: str) -> Dict[str, Any]:
    """``{"figures", "sums"}`` of one image recomputed from its saved SR images and masks."""
    out = Path(out_dir)
    sr = {k: imageio.read_rgb(out / d / f"{key}.png") for k, d in SR_DIRS.items()}
    masks = {k: imageio.read_mask(out / k / f"{key}.png") for k in ("before", "after")}
    return metrics.finetune_figures(sr["before"], sr["after"], sr["mse"], masks["before"], masks["after"])


def titled(panels: List[np.ndarray], titles: List[str]) -> np.ndarray:
    """(H, W_i, 3) uint8 panels side by side under a white title row each, 8-px white gaps."""
    import cv2

    h = max(p.shape[0] for p in panels)
    bar = max(18, min(40, h // 12))
    cols = []
    for p, t in zip(panels, titles):
        head = np.full((bar, p.shape[1], 3), 255, np.uint8)
        scale = bar / 36
        cv2.putText(head, t, (6, int(bar * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    max(1, round(2 * scale)), cv2.LINE_AA)
        cols.append(np.concatenate([head, p], axis=0))
    gap = np.full((h + bar, 8, 3), 255, np.uint8)
    out = [cols[0]]
    for c in cols[1:]:
        out += [gap, c]
    return np.concatenate(out, axis=1)


def compare_picture(sr: Dict[str, np.ndarray], masks: Dict[str, np.ndarray]) -> np.ndarray:
    """before (its regions tinted and outlined) | after (its regions) | MSE-SR (before's
    outlines): (H + title, 3 W + 16, 3) uint8 RGB."""
    from ..overlay import GAP, make_overlay

    w = sr["before"].shape[1]
    left = make_overlay(sr["before"], sr["mse"], masks["before"])
    mid = make_overlay(sr["after"], sr["mse"], masks["after"])
    return titled([left[:, :w], mid[:, :w], left[:, w + GAP:]],
                  ["before fine-tune", "after fine-tune", "MSE-SR (before's regions)"])


# ---------------------------------------------------------------------- the report
def _finite_or_none(x):
    """NaN / inf -> None, recursively (JSON has neither)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    return x


def _gt_figures(job: EvaluateFinetuneJob, done: List[str]) -> Dict[str, Any]:
    """IoU before/after and removal/addition against the human masks of ``job.gt_dir``, for the
    evaluated images that have one (read back from ``OUT/before`` and ``OUT/after``)."""
    gts = imageio.list_images(job.gt_dir, exclude=[job.out_dir])
    befores, afters, gtm, cropped, aligned, names, errors = [], [], [], [], [], [], {}
    for key in done:
        rels = gts.get(key)
        if not rels:
            continue
        try:
            if len(rels) > 1:
                raise ValueError(f"ambiguous name: several GT masks for {key}: {sorted(rels)}")
            g = imageio.read_mask(os.path.join(job.gt_dir, rels[0]))
            b = imageio.read_mask(os.path.join(job.out_dir, "before", key + ".png"))
            a = imageio.read_mask(os.path.join(job.out_dir, "after", key + ".png"))
            if g.shape != b.shape:
                raise ValueError(f"GT mask {rels[0]} is {g.shape[1]}x{g.shape[0]}, the SR images "
                                 f"{b.shape[1]}x{b.shape[0]} (W x H)")
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        befores.append(b), afters.append(a), gtm.append(g), names.append(key)
        cropped.append(metrics.crop_gt(g))
        aligned.append(metrics.align_pred(a, cropped[-1].shape))
    s_b = metrics.detection_scores(befores, gtm, names=names)
    s_a = metrics.detection_scores(afters, gtm, names=names)
    c = metrics.change_scores(cropped, aligned, names=names)
    return {"gt_images": len(names), "iou_before": s_b.iou, "iou_after": s_a.iou,
            "removal_rate_vs_gt": c.removal_rate, "addition_rate_vs_gt": c.addition_rate, "gt_errors": errors}


def build_report(job: EvaluateFinetuneJob, res: JobResult) -> Dict[str, Any]:
    """The content of ``OUT/report.json`` after a run of ``job`` (NaN / inf as None).

    Pooled figures first (:func:`desra_fast.metrics.pool_finetune_figures`; ``images`` and
    ``after_key``), then with a GT folder ``gt_images``, ``iou_before``, ``iou_after``,
    ``removal_rate_vs_gt``, ``addition_rate_vs_gt``, ``gt_errors``; then ``per_image``
    {key: figures} and ``errors`` {key: message}, both sorted by key. Built from the manifest
    only (no timing), so that a resumed run reports the same bytes."""
    lines = read_manifest(Path(job.out_dir) / MANIFEST)
    per, errors = {}, {}
    for it in job._items if job._items is not None else job.plan():
        if it.key in res.failed:
            errors[it.key] = res.failed[it.key]
            continue
        rec = lines.get(it.key)
        if rec is None or "figures" not in rec or "sums" not in rec:
            rec = figures_from_outputs(job.out_dir, it.key)  # only if a line is missing or foreign
        per[it.key] = {"figures": rec["figures"], "sums": rec["sums"]}
    pooled = metrics.pool_finetune_figures([per[k] for k in sorted(per)])
    report: Dict[str, Any] = {"images": pooled["images"], "after_key": job.after_key_used}
    report.update((k, pooled[k]) for k in POOLED)
    if job.gt_dir is not None:
        report.update(_gt_figures(job, sorted(per)))
    report["per_image"] = {k: per[k]["figures"] for k in sorted(per)}
    report["errors"] = dict(sorted(errors.items()))
    return _finite_or_none(report)


def report_bytes(report: Dict[str, Any]) -> bytes:
    """report.json's bytes: indented, keys in the report's order, ASCII only, no NaN."""
    return (json.dumps(report, indent=1, allow_nan=False) + "\n").encode("ascii")


def evaluate_finetune(job: EvaluateFinetuneJob, options: Optional[RunOptions] = None, *,
                      log=None) -> Tuple[JobResult, Dict[str, Any]]:
    """Run (or resume) ``job`` into ``job.out_dir``, then write ``OUT/report.json`` atomically.

    Returns ``(JobResult, report)``. Raises JobError when the job cannot start (missing folder,
    unreadable model, key not in the checkpoint, models of different scales, settings changed)."""
    import sys

    from ..utils import write_bytes_atomic

    res = run_job(job, job.out_dir, options, log=log or sys.stderr)
    report = build_report(job, res)
    write_bytes_atomic(os.path.join(job.out_dir, REPORT), report_bytes(report))
    return res, report
