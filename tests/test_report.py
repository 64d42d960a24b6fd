"""``desra-fast report`` without a browser: ranking (against ``desra-fast select``'s own output),
page structure and escaping, bad input, atomic rebuilds, the 50,000-line run. The browser checks
are in tests/test_report_browser.py."""
from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from desra_fast.cli import main  # noqa: E402
from desra_fast.report import ReportError, build_eval_report, build_run_report  # noqa: E402
from desra_fast.report import run_report as run_report_mod  # noqa: E402

from report_helpers import HOSTILE, make_eval, make_run, page_data  # noqa: E402
from test_pipeline import save_models  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_run")
    return make_run(root, save_models(root))


def _select(run: Path, out: Path, top: int, train: int, by: str = "fraction"):
    assert main(["select", "--run", str(run), "--top", str(top), "--train", str(train), "--by", by, "-o", str(out)]) == 0
    ranking = [ln.split("\t")[-1] for ln in (out / "ranking.tsv").read_text("utf-8").splitlines()[1:]]
    return ranking, (out / "train.txt").read_bytes(), (out / "val.txt").read_bytes()


def _chunk_rows(site: Path) -> list:
    rows = []
    for p in sorted((site / "rows").glob("*.js")):
        text = p.read_text("utf-8")
        assert text.startswith("desraRows(") and text.endswith(");\n")
        rows += json.loads(text[text.index(",") + 1:-3])
    return rows


@pytest.mark.parametrize("by", ["fraction", "area", "regions"])
def test_gallery_and_table_rank_as_select(run_dir, tmp_path, by):
    ranking, _, _ = _select(run_dir, tmp_path / "lists", top=3, train=1, by=by)
    res = build_run_report(run_dir, tmp_path / "site", top=3, by=by)
    data = page_data(res.index)
    assert [it["lr"] for it in data["items"]] == ranking
    full, _, _ = _select(run_dir, tmp_path / "all", top=1000, train=0, by=by)
    rows = _chunk_rows(tmp_path / "site")
    ranked = [r for r in rows if r[0] is not None]
    assert [r[1] for r in ranked] == full and [r[0] for r in ranked] == list(range(1, len(full) + 1))
    assert len(rows) == 8  # every image of the run, ranked ones first


def test_page_structure_escaping_and_files(run_dir, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["report", "--run", str(run_dir), "-o", str(out), "--top", "10"]) == 0
    err = capsys.readouterr().err
    assert f"open file://{out.resolve() / 'index.html'}" in err
    text = (out / "index.html").read_text("utf-8")
    # No external resource and no file name as markup: the hostile name only appears escaped.
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert HOSTILE not in text and "<img src=x" not in text
    assert "\\u003cimg src=x onerror=window.pwned=1\\u003e.png" in text
    data = page_data(out / "index.html")
    assert data["counts"] == {"images": 8, "done": 8, "failed": 0, "with_artifacts": 4, "lines": 8, "corrupt_lines": 0}
    assert HOSTILE + ".png" in [it["lr"] for it in data["items"]]
    for it in data["items"]:
        assert it["missing"] == [] and it["full"] and len(it["crops"]) == min(4, it["regions"])
        for rel in [it["thumb"], *it["full"].values(), *(c[k] for c in it["crops"] for k in ("gan", "mse", "fix", "mask"))]:
            assert (out / rel).is_file() and "<" not in rel
        # region crops are at full SR resolution: the GAN crop is exactly the GAN-SR pixels' size
        c = it["crops"][0]
        assert cv2.imread(str(out / c["mask"]), cv2.IMREAD_GRAYSCALE).shape == (c["h"], c["w"])
    # the largest region's crop holds the whole region when it fits, as the mask file has it
    mask = cv2.imread(str(run_dir / "masks" / "with space b.png"), cv2.IMREAD_GRAYSCALE)
    item = next(it for it in data["items"] if it["lr"] == "with space b.png")
    c = item["crops"][0]
    assert (cv2.imread(str(out / c["mask"]), cv2.IMREAD_GRAYSCALE) > 0).sum() == c["area"] == 594
    assert mask[c["y"]:c["y"] + c["h"], c["x"]:c["x"] + c["w"]].astype(bool).sum() >= 594
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".desra-report")]


def test_bad_input_missing_files_corrupt_lines(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    with open(run / "manifest.jsonl", "ab") as fh:
        fh.write(b"not json\n{\"no_path\": 1}\n[1, 2]\n{\"path\": \"masks/x.png\", \"areas\": \"oops\"}\n\xff\xfe\n")
        fh.write(b'{"path": "masks/torn.png"')  # torn last line: not complete, not counted
    (run / "overlays" / "with space b.jpg").unlink()
    (run / "gan" / "quote's \"c\".png").unlink()
    (run / "mse" / "ünïcødé_d.png").write_bytes(b"\x89PNG truncated")
    before = (run / "manifest.jsonl").read_bytes()
    res = build_run_report(run, top=10)
    assert (run / "manifest.jsonl").read_bytes() == before  # the report never changes the run
    assert res.index == run / "report" / "index.html" and res.corrupt_lines == 5 and res.missing == 3
    items = {it["lr"]: it for it in page_data(res.index)["items"]}
    assert items["with space b.png"]["missing"] == ["overlay: missing"]
    assert items["with space b.png"]["thumb"]  # the GAN-SR picture stands in
    assert items["quote's \"c\".png"]["missing"] == ["GAN-SR: missing"] and items["quote's \"c\".png"]["full"] is None
    assert items["ünïcødé_d.png"]["missing"][0].startswith("MSE-SR: unreadable")
    # no manifest; a file where the site should go
    capsys.readouterr()
    assert main(["report", "--run", str(tmp_path / "nothing")]) == 1
    assert "no manifest" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ReportError, match="not a folder"):
        build_run_report(run, tmp_path / "afile")
    for folder in (run, tmp_path, run / "masks"):  # never replaces a folder that is not a report
        with pytest.raises(ReportError, match="not a report"):
            build_run_report(run, folder)
    assert (run / "manifest.jsonl").read_bytes() == before
    with pytest.raises(SystemExit):
        main(["report", "--run", str(run), "--eval", str(run)])


def test_rerun_is_atomic_and_updates(run_dir, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    site = tmp_path / "site"
    build_run_report(run, site, top=10)
    first = (site / "index.html").read_bytes()
    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while writing the gallery pictures
        return real(*a, **k)

    real = run_report_mod._image_assets
    monkeypatch.setattr(run_report_mod, "_image_assets", boom)
    with pytest.raises(KeyboardInterrupt):
        build_run_report(run, site, top=10)
    monkeypatch.undo()
    assert (site / "index.html").read_bytes() == first  # the old site untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".desra-report")]
    # the run progressed: a new image with the worst fraction appears first after a rebuild
    rec = json.loads((run / "manifest.jsonl").read_text("utf-8").splitlines()[0])
    rec.update(path="masks/zz new.png", lr="zz new.png", artifact_fraction=0.99, regions=1, areas=[5])
    with open(run / "manifest.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    build_run_report(run, site, top=10)
    items = page_data(site / "index.html")["items"]
    assert items[0]["lr"] == "zz new.png" and items[0]["missing"]  # its files are not there
    assert sorted(p.name for p in site.iterdir()) == ["img", "index.html", "rows"]


def _synthetic_run(run: Path, n: int, top_files: int, seed: int = 0) -> None:
    """``n`` manifest lines (ties, failures, retried paths, corrupt lines) and SR files for the
    ``top_files`` worst images only (found with ``desra-fast select``)."""
    rng = np.random.default_rng(seed)
    run.mkdir(parents=True)
    lines = []
    for i in range(n):
        regions = int(rng.integers(0, 4)) if i % 3 else 0
        areas = sorted((int(a) for a in rng.integers(4001, 90000, regions)), reverse=True)
        frac = round(float(rng.random()) * 0.2, 3) if regions else 0.0  # rounded: many ties
        rec = {"path": f"masks/n{i % 97:02d}/img {i:06d}.png", "lr": f"n{i % 97:02d}/img {i:06d}.JPEG",
               "size": [64, 64], "artifact_fraction": frac, "regions": regions, "areas": areas,
               "d": {"mean": 0.9, "min": 0.1, "p1": 0.3, "p5": 0.6, "below_threshold": frac}, "error": None}
        if i % 1000 == 7:
            rec = {"path": rec["path"], "lr": rec["lr"], "error": "ValueError: corrupt"}
        lines.append(json.dumps(rec))
        if i % 5000 == 11:
            lines.append("{corrupt")
    lines.append(json.dumps({"path": "masks/n07/img 000007.png", "lr": "n07/img 000007.JPEG", "artifact_fraction": 0.5,
                             "regions": 1, "areas": [4100], "error": None}))  # retried: the last line counts
    (run / "manifest.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    lists = run.parent / "lists"
    assert main(["select", "--run", str(run), "--top", str(top_files), "--train", "0", "-o", str(lists)]) == 0
    yy, xx = np.mgrid[:64, :64]
    for ln in (lists / "val.txt").read_text("utf-8").splitlines():
        key = os.path.splitext(ln)[0]
        img = rng.integers(0, 256, (64, 64, 3), np.uint8)
        mask = (((yy - 32) ** 2 + (xx - 30) ** 2) < 300).astype(np.uint8) * 255
        for sub, data in (("gan", img), ("mse", img // 2), ("masks", mask)):
            p = run / sub / f"{key}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(cv2.imencode(".png", data)[1].tobytes())
        (run / "overlays" / key).parent.mkdir(parents=True, exist_ok=True)
        (run / "overlays" / f"{key}.jpg").write_bytes(cv2.imencode(".jpg", np.hstack([img, img // 2]))[1].tobytes())


def test_50000_lines_under_20s_ranked_as_select(tmp_path):
    run = tmp_path / "run"
    _synthetic_run(run, 50_000, 200)
    ranking, train, val = _select(run, tmp_path / "l2", top=200, train=50)
    t0 = time.perf_counter()
    res = build_run_report(run, top=200)
    seconds = time.perf_counter() - t0
    assert seconds < 20, f"{seconds:.1f} s for 50,000 lines"
    data = page_data(res.index)
    assert [it["lr"] for it in data["items"]] == ranking and res.missing == 0
    assert data["counts"]["images"] == 50_000 and data["counts"]["corrupt_lines"] == 10
    assert data["counts"]["failed"] == 49  # 50 failures, one retried successfully
    rows = _chunk_rows(run / "report")
    assert len(rows) == 50_000 and data["chunks"] == 10
    assert [r[1] for r in rows[:200]] == ranking
    assert sum(data["hist"]["fraction"]["counts"]) == data["counts"]["with_artifacts"]
    last = {}
    for ln in (run / "manifest.jsonl").read_text("utf-8").splitlines():
        try:
            last[json.loads(ln)["path"]] = json.loads(ln)
        except ValueError:
            pass
    areas = [a for r in last.values() if r.get("error") is None and (r.get("regions") or 0) > 0 for a in r["areas"]]
    assert sum(data["hist"]["area"]["counts"]) == len(areas)
    # the documented bins: 4 a decade, bin k holds 10^(k/4) <= area < 10^((k+1)/4)
    edges, counts = data["hist"]["area"]["edges"], data["hist"]["area"]["counts"]
    import math

    ks = [math.floor(math.log10(a) * 4) for a in areas]
    assert counts == [ks.count(k) for k in range(min(ks), max(ks) + 1)]
    assert edges[0] == pytest.approx(10 ** (min(ks) / 4)) and len(edges) == len(counts) + 1
    print(f"report of 50,000 lines: {seconds:.2f} s")


def test_memory_does_not_grow_with_the_run(tmp_path):
    """Python allocations while indexing and ranking: the same for 4,000 and 40,000 lines."""
    from desra_fast.report import runindex

    peaks = []
    for n in (4_000, 40_000):
        run = tmp_path / f"r{n}"
        run.mkdir()
        with open(run / "manifest.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"path": f"masks/{i:07d}.png", "lr": f"{i:07d}.png", "artifact_fraction": (i * 7919 % 1000) / 1000,
                                     "regions": 1, "areas": [4001 + i % 50], "error": None}) + "\n")
        tracemalloc.start()
        idx = runindex.build_index(run / "manifest.jsonl", run / "i.sqlite", "fraction")
        top = runindex.top_records(idx, 20)
        hist = runindex.histograms(idx)
        rows = sum(1 for _ in runindex.table_rows(idx))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        idx.close()
        assert len(top) == 20 and rows == n and sum(hist["fraction"]["counts"]) == n
    assert peaks[1] < 1.3 * peaks[0] + 200_000, peaks


def test_eval_report(tmp_path, capsys):
    ev = make_eval(tmp_path)
    assert main(["report", "--eval", str(ev)]) == 0
    assert "open file://" in capsys.readouterr().err
    index = ev / "report" / "index.html"
    text = index.read_text("utf-8")
    assert "<script>alert" not in text and "<b>x</b>" not in text and HOSTILE not in text
    data = page_data(index)
    rep = json.loads((ev / "report.json").read_text("utf-8"))
    assert data["pooled"] == {k: v for k, v in rep.items() if k not in ("per_image", "errors")}
    assert data["pooled_fields"] == [k for k in rep if k not in ("per_image", "errors")]
    assert {it["key"]: it["figures"] for it in data["images"]} == rep["per_image"]
    for it in data["images"]:
        assert it["missing"] == [] and sorted(it["pics"]) == ["after", "before", "mse"]
        assert all((ev / "report" / p).is_file() for p in it["pics"].values())
    # bad input: no report.json, a corrupt one, a missing SR picture
    with pytest.raises(ReportError, match="no report.json"):
        build_eval_report(tmp_path / "nope")
    (ev / "sr" / "mse" / "a.png").unlink()
    res = build_eval_report(ev)
    assert res.missing == 1 and next(it for it in page_data(res.index)["images"] if it["key"] == "a")["missing"] == ["SR mse: missing"]
    (ev / "report.json").write_text("{\"per_image\": [", "utf-8")
    assert main(["report", "--eval", str(ev)]) == 1
    assert "unreadable" in capsys.readouterr().err


def test_page_data_cannot_break_out():
    """Data and title reach the page as inert text, whatever they hold."""
    from desra_fast.report.site import render_page, script_json

    nasty = ["</script><script>window.pwned=1</script>", "\u2028\u2029", "\udcff lone surrogate", "@DATA@",
             "/*@PAGE_JS@*/", "a & b <!--", float("nan")]
    text = script_json(nasty)
    assert text.isascii() and not set("<>&") & set(text)
    assert json.loads(text)[:6] == nasty[:6] and json.loads(text)[6] is None
    page = render_page("</title><script>window.pwned=1</script> @DATA@ /*@CSS@*/", "eval.js", {"x": nasty})
    assert page.count("<script") == 3 and "window.pwned=1</script>" not in page
    assert "&lt;/title&gt;&lt;script&gt;window.pwned=1&lt;/script&gt; @DATA@ /*@CSS@*/" in page


def test_ade20k_classes_of_the_regions(run_dir, tmp_path):
    import shutil

    from desra_fast.weights import class_names

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "seg").mkdir()
    expect = {}
    for i, rec in enumerate(r for r in map(json.loads, (run / "manifest.jsonl").read_text("utf-8").splitlines())
                            if r["regions"]):
        key = rec["path"][len("masks/"):-len(".png")]
        mask = cv2.imread(str(run / "masks" / f"{key}.png"), cv2.IMREAD_GRAYSCALE) > 0
        labels = np.full(mask.shape, 2, np.uint8)  # sky
        labels[:, : mask.shape[1] // 2] = 12 + i  # left half: another class per image
        p = run / "seg" / f"{key}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(cv2.imencode(".png", labels)[1].tobytes())
        for lab in (2, 12 + i):
            px = int((mask & (labels == lab)).sum())
            if px:
                expect[class_names()[lab]] = expect.get(class_names()[lab], 0) + px
    data = page_data(build_run_report(run, tmp_path / "site", top=10).index)
    assert data["has_seg"] and dict(data["classes"]) == expect
    assert [px for _, px in data["classes"]] == sorted(expect.values(), reverse=True)


def test_eval_report_of_a_real_evaluate_finetune_folder(run_dir, tmp_path):
    """The evaluation folder as `desra-fast evaluate-finetune` writes it (tiny models: the
    'fine-tuned' one has less texture), read by `report --eval`."""
    from report_helpers import AREA, THRESHOLD
    from test_pipeline import identity_rrdbnet

    models = save_models(tmp_path)
    after = tmp_path / "after.pth"
    torch.save({"params_ema": identity_rrdbnet(1.0, seed=1).state_dict()}, after)
    ev = tmp_path / "eval"
    from desra_fast.utils import write_list

    write_list(tmp_path / "val.txt", [f"{HOSTILE}.png", "with space b.png", "ünïcødé_d.png"])
    rc = main(["evaluate-finetune", "--before", models["gan"], "--after", str(after), "--mse-model", models["mse"],
               "--lr", str(run_dir.parent / "lr"), "--out", str(ev), "--area-threshold", str(AREA),
               "--threshold", str(THRESHOLD), "--list", str(tmp_path / "val.txt")])
    assert rc == 0
    res = build_eval_report(ev)
    rep = json.loads((ev / "report.json").read_text("utf-8"))
    data = page_data(res.index)
    assert res.images == len(rep["per_image"]) == 3 and res.missing == 0
    assert data["pooled"] == {k: v for k, v in rep.items() if k not in ("per_image", "errors")}
    assert {it["key"]: it["figures"] for it in data["images"]} == rep["per_image"]
    assert all(sorted(it["pics"]) == ["after", "before", "mse"] for it in data["images"])
    assert HOSTILE in {it["key"] for it in data["images"]} and HOSTILE not in res.index.read_text("utf-8")
