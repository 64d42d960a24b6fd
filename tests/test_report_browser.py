"""``desra-fast report`` pages in a real browser: headless Chromium (Debian's ``chromium`` +
``chromium-driver``, installed by scripts/install.sh) driven by Selenium, one browser for the
module. Pages are opened from disk (``file://``) and checked for console errors, network requests,
decoded pictures, working sliders, curation downloads (against ``desra-fast select`` run on the
manifest without the rejected images) and the evaluation figures (against report.json). A
screenshot of each page goes to the test's folder (and to ``$DESRA_FAST_REPORT_SCREENSHOTS`` when
set: that is how docs/images/ is made). Without a browser these tests skip, saying why."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from desra_fast.cli import main  # noqa: E402
from desra_fast.report import build_eval_report, build_run_report  # noqa: E402

from report_helpers import HOSTILE, make_eval, make_run  # noqa: E402
from test_pipeline import save_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _browser_or_skip(downloads: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; scripts/install.sh installs it)")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; "
                    "scripts/install.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--disable-extensions", "--no-first-run"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    try:
        d = webdriver.Chrome(options=opts, service=Service(driver))
    except Exception as exc:  # a broken install: say what failed
        pytest.skip(f"headless Chromium does not start: {str(exc).splitlines()[0]}")
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return d


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    d = _browser_or_skip(downloads)
    d.downloads = downloads
    yield d
    d.quit()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_run")
    return make_run(root, save_models(root))


def _open(d, index: Path, wait_table: bool = True) -> None:
    d.get_log("browser")  # drop earlier messages
    d.get(index.resolve().as_uri())
    if wait_table:
        _wait(d, "return document.getElementById('table-status').dataset.done === '1'")


def _wait(d, script: str, timeout: float = 20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = d.execute_script(script)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _page_clean(d) -> None:
    """No console errors, every request a local file (or an in-page blob), no injected script."""
    errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    urls = d.execute_script("return performance.getEntriesByType('navigation').concat("
                            "performance.getEntriesByType('resource')).map(e => e.name)")
    assert urls and all(u.startswith(("file://", "blob:", "data:")) for u in urls), urls
    assert d.execute_script("return window.pwned") is None


def _visible_images_decoded(d) -> int:
    """Every picture in the viewport decodes (naturalWidth > 0); returns how many were checked."""
    return d.execute_async_script("""
      const done = arguments[arguments.length - 1];
      const vis = [...document.images].filter((im) => {
        const r = im.getBoundingClientRect();
        return im.offsetParent !== null && r.bottom > 0 && r.top < innerHeight && r.width > 0;
      });
      Promise.all(vis.map((im) => im.decode().then(() => im.naturalWidth > 0, () => false)))
        .then((ok) => done(ok.every(Boolean) ? vis.length : -1));
    """)


def _screenshot(d, tmp_path: Path, name: str) -> None:
    d.save_screenshot(str(tmp_path / name))
    extra = os.environ.get("DESRA_FAST_REPORT_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(extra) / name)


def _slider_changes_picture(d, kind: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    box = d.find_element("css selector", f"#detail .compare[data-kind='{kind}'], .compare[data-kind='{kind}']")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    before = box.screenshot_as_png
    clip = d.execute_script("return arguments[0].querySelector('img.top').style.clipPath", box)
    ActionChains(d).move_to_element_with_offset(box, -box.size["width"] // 2 + 3, 0).click_and_hold() \
        .move_by_offset(2, 0).release().perform()  # drag the handle to the left edge
    assert float(box.get_attribute("data-pos")) < 20  # from 50
    assert d.execute_script("return arguments[0].querySelector('img.top').style.clipPath", box) != clip
    assert box.screenshot_as_png != before


def _download(d, button: str) -> bytes:
    for p in d.downloads.iterdir():
        p.unlink()
    d.find_element("id", button).click()
    name = "train.txt" if button == "dl-train" else "val.txt"
    t0 = time.time()
    while not (d.downloads / name).is_file() or list(d.downloads.glob("*.crdownload")):
        assert time.time() - t0 < 10, "no download"
        time.sleep(0.05)
    return (d.downloads / name).read_bytes()


def _select_without(run: Path, rejected, tmp: Path, top: int, train: int):
    """``desra-fast select`` on a copy of the run whose manifest lacks the rejected images."""
    sub = tmp / f"sel_{len(list(tmp.iterdir()))}"
    sub.mkdir()
    lines = [ln for ln in (run / "manifest.jsonl").read_text("utf-8").splitlines()
             if json.loads(ln).get("lr") not in rejected]
    (sub / "manifest.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    assert main(["select", "--run", str(sub), "--top", str(top), "--train", str(train), "-o", str(sub / "l")]) == 0
    return (sub / "l" / "train.txt").read_bytes(), (sub / "l" / "val.txt").read_bytes()


def _click(d, element) -> None:
    """Click as a user does, after scrolling the element clear of the sticky toolbar."""
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _key(d, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).send_keys(keys).perform()


def test_run_report_in_chromium(browser, run_dir, tmp_path):
    d = browser
    res = build_run_report(run_dir, tmp_path / "site", top=4, train=1)
    _open(d, res.index)
    _page_clean(d)
    assert main(["select", "--run", str(run_dir), "--top", "4", "--train", "1", "-o", str(tmp_path / "l")]) == 0
    ranking = [ln.split("\t")[-1] for ln in (tmp_path / "l" / "ranking.tsv").read_text("utf-8").splitlines()[1:]]
    names = d.execute_script("return [...document.querySelectorAll('.card .name')].map(e => e.textContent)")
    assert names == [f"#{i + 1}  {lr}" for i, lr in enumerate(ranking)] and len(names) == 4
    assert any(HOSTILE in n for n in names) and d.execute_script("return window.pwned") is None
    assert _visible_images_decoded(d) >= 4
    assert d.execute_script("return document.querySelectorAll('#rank-table tbody tr').length") == 8
    _screenshot(d, tmp_path, "report_run.png")

    # detail view: keyboard, pictures, sliders on the whole image and on a region crop
    _click(d, d.find_elements("css selector", ".card")[0])
    _key(d, "\n")
    assert d.find_element("id", "detail").is_displayed()
    assert _visible_images_decoded(d) >= 2
    _screenshot(d, tmp_path, "report_detail.png")
    for kind in ("gan-mse", "gan-fix", "crop-gan-mse"):
        _slider_changes_picture(d, kind)
    _key(d, "\ue00c")  # Escape
    assert not d.find_element("id", "detail").is_displayed()
    _page_clean(d)

    # curation: lists as select writes them (train 1 of top 4), then with 2 rejected (0.5 rounds to 0
    # as Python's round does), then train 3 (1.5 -> 2)
    sel = tmp_path / "sel"
    sel.mkdir()
    assert (_download(d, "dl-train"), _download(d, "dl-val")) == _select_without(run_dir, [], sel, 4, 1)
    cards = d.find_elements("css selector", ".card")
    _click(d, cards[1])
    _key(d, "r")
    _key(d, "j")  # next card
    _key(d, "x")
    _click(d, cards[0])
    _key(d, "a")
    rejected = [ranking[1], ranking[2]]
    assert d.execute_script("return [...document.querySelectorAll('.card.rejected .name')].length") == 2
    assert (_download(d, "dl-train"), _download(d, "dl-val")) == _select_without(run_dir, rejected, sel, 4, 1)
    box = d.find_element("id", "train-n")
    box.clear()
    box.send_keys("3")
    train, val = _download(d, "dl-train"), _download(d, "dl-val")
    assert (train, val) == _select_without(run_dir, rejected, sel, 4, 3)
    assert all(r.encode() not in train + val for r in rejected) and train.count(b"\n") == 2
    # the downloaded list is what finetune --list reads
    from desra_fast.train.data import from_run
    from desra_fast.utils import read_list

    (tmp_path / "train.txt").write_bytes(train)
    keys = read_list(tmp_path / "train.txt")
    assert sorted(s.key for s in from_run(run_dir, tmp_path / "train.txt")) == sorted(keys)
    # marks survive a reload (browser storage)
    _open(d, res.index)
    assert d.execute_script("return [...document.querySelectorAll('.card.rejected')].length") == 2
    d.find_element("id", "clear-marks").click()
    _page_clean(d)


def test_eval_report_in_chromium(browser, tmp_path, monkeypatch):
    from selenium.common.exceptions import NoAlertPresentException

    d = browser
    ev = make_eval(tmp_path)
    rep = json.loads((ev / "report.json").read_text("utf-8"))
    monkeypatch.chdir(tmp_path)  # the page shows the folder as given: a relative name in the screenshot
    res = build_eval_report("eval")
    _open(d, res.index, wait_table=False)
    _page_clean(d)
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text
    cells = d.execute_script("""return [...document.querySelectorAll('#image-table tbody tr')].map(tr =>
        [tr.dataset.key, [...tr.querySelectorAll('td[data-field]')].map(td => [td.dataset.field, td.dataset.value, td.textContent])])""")
    assert sorted(k for k, _ in cells) == sorted(rep["per_image"])
    for key, row in cells:
        assert [f for f, _, _ in row] == list(rep["per_image"][key])
        for field, value, text in row:
            _same_figure(rep["per_image"][key][field], value, text)
    pooled = d.execute_script("return [...document.querySelectorAll('#pooled-table td[data-field]')]"
                              ".map(td => [td.dataset.field, td.dataset.value, td.textContent])")
    assert [f for f, _, _ in pooled] == [k for k in rep if k not in ("per_image", "errors")]
    for field, value, text in pooled:
        _same_figure(rep[field], value, text)
    err = d.execute_script("return document.querySelector('#errors li').textContent")
    assert err == "broken <b>x</b>: decode failed: <script>alert(1)</script>"
    _screenshot(d, tmp_path, "report_eval.png")
    d.execute_script("document.querySelector('.eval-image').scrollIntoView()")
    assert _visible_images_decoded(d) >= 2
    _screenshot(d, tmp_path, "report_eval_images.png")
    _slider_changes_picture(d, "before-after")
    _slider_changes_picture(d, "after-mse")
    _page_clean(d)


def _same_figure(expected, value: str, text: str) -> None:
    """A cell shows report.json's figure: the exact value in data-value, the text rounded."""
    if expected is None:
        assert value == "null" and text == "n/a"
        return
    if isinstance(expected, str):
        assert value == text == expected
        return
    assert float(value) == expected
    num = float(re.sub(r"[^0-9.eE+-]", "", text.replace(",", "")))
    if text.endswith("%"):
        assert abs(num - 100 * expected) <= 0.005 + 1e-9
    elif text.endswith("dB"):
        assert abs(num - expected) <= 0.005 + 1e-9
    else:
        assert abs(num - expected) <= 5e-4 * max(1.0, abs(expected))


def test_demo_run_report_in_chromium(browser, tmp_path, monkeypatch):
    """The demo's run folder (scripts/demo.sh: real Real-ESRGAN x4plus + SRMD x4 on samples/lr)."""
    demo = Path(os.environ.get("DESRA_FAST_DEMO_RUN", ROOT / "demo_run")).resolve()
    if not (demo / "manifest.jsonl").is_file():
        pytest.skip(f"{demo} has no manifest: run scripts/demo.sh first (or set DESRA_FAST_DEMO_RUN)")
    d = browser
    monkeypatch.chdir(demo.parent)  # the page shows the folder as given: a relative name in the screenshot
    res = build_run_report(demo.name, tmp_path / "site")
    _open(d, res.index)
    _page_clean(d)
    assert main(["select", "--run", str(demo), "--top", "200", "--train", "50", "-o", str(tmp_path / "l")]) == 0
    ranking = [ln.split("\t")[-1] for ln in (tmp_path / "l" / "ranking.tsv").read_text("utf-8").splitlines()[1:]]
    assert d.execute_script("return [...document.querySelectorAll('.card .name')].map(e => e.textContent)") == \
        [f"#{i + 1}  {lr}" for i, lr in enumerate(ranking)]
    assert _visible_images_decoded(d) >= len(ranking)
    _screenshot(d, tmp_path, "report_demo_run.png")
    _click(d, d.find_elements("css selector", ".card .open")[0])
    assert _visible_images_decoded(d) >= 2
    _screenshot(d, tmp_path, "report_demo_detail.png")
    _slider_changes_picture(d, "gan-mse")
    _slider_changes_picture(d, "crop-gan-fix")
    d.find_element("id", "close-detail").click()
    assert (_download(d, "dl-train"), _download(d, "dl-val")) == \
        ((tmp_path / "l" / "train.txt").read_bytes(), (tmp_path / "l" / "val.txt").read_bytes())
    _page_clean(d)


def test_50000_line_run_in_chromium(browser, tmp_path):
    """The acceptance case: a synthetic 50,000-line run (pictures for the top 200 only)."""
    from test_report import _synthetic_run

    d = browser
    run = tmp_path / "run"
    _synthetic_run(run, 50_000, 200)
    res = build_run_report(run)  # its time is asserted in tests/test_report.py
    assert main(["select", "--run", str(run), "--top", "200", "--train", "50", "-o", str(tmp_path / "l")]) == 0
    ranking = [ln.split("\t")[-1] for ln in (tmp_path / "l" / "ranking.tsv").read_text("utf-8").splitlines()[1:]]
    t0 = time.perf_counter()
    _open(d, res.index)  # waits until the 10 chunks of the table are in
    load = time.perf_counter() - t0
    _page_clean(d)
    assert d.execute_script("return document.querySelectorAll('.card').length") == 200
    assert d.execute_script("return [...document.querySelectorAll('.card .name')].map(e => e.textContent)") == \
        [f"#{i + 1}  {lr}" for i, lr in enumerate(ranking)]
    assert d.find_element("id", "table-status").text == "all 50000 images loaded"
    assert _visible_images_decoded(d) >= 4
    # the table: ranked rows first in select's order; filter; sort by a column
    first = d.execute_script("return [...document.querySelectorAll('#rank-table tbody tr')].slice(0, 200)"
                             ".map(tr => tr.children[1].textContent)")
    assert first == ranking
    box = d.find_element("css selector", "#rank-table input[type=search]")
    box.send_keys("n07/img 00")  # images 0..9,999 of class folder n07
    shown = d.execute_script("return [...document.querySelectorAll('#rank-table tbody tr')].map(tr => tr.children[1].textContent)")
    assert shown and all(s.startswith("n07/img 00") for s in shown)
    assert len(shown) == sum(1 for i in range(10_000) if i % 97 == 7)
    box.send_keys("\ue009a", "\ue003")  # Ctrl+A, Backspace: the filter emptied as a user does
    d.find_elements("css selector", "#rank-table th")[3].click()  # regions: most first
    regions = d.execute_script("return [...document.querySelectorAll('#rank-table tbody tr')].map(tr => +tr.children[3].textContent)")
    assert len(regions) == 500 and regions == sorted(regions, reverse=True) and regions[0] == 3
    # a slider, and curation of the 50,000-line run
    _click(d, d.find_elements("css selector", ".card .open")[0])
    _slider_changes_picture(d, "gan-mse")
    d.find_element("id", "close-detail").click()
    _click(d, d.find_elements("css selector", ".card")[3])
    _key(d, "r")
    sel = tmp_path / "sel"
    sel.mkdir()
    train, val = _download(d, "dl-train"), _download(d, "dl-val")
    # select on the run without the rejected image would pull in image 201: the page's lists are
    # the 199 others, split as select splits 199 ranked images of a requested 200
    from desra_fast.jobs.select import split_lists

    kept = [lr for i, lr in enumerate(ranking) if i != 3]
    want = split_lists(kept, 50, 200)
    assert (train, val) == tuple("".join(p + "\n" for p in lst).encode() for lst in want)
    d.find_element("id", "clear-marks").click()
    _page_clean(d)
    print(f"50,000-line page: table loaded in {load:.1f} s")


def test_empty_and_failed_runs_open_cleanly(browser, tmp_path):
    """A run with no image yet, and one where every image failed: pages open, nothing to rank."""
    d = browser
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.jsonl").write_bytes(b"")
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "manifest.jsonl").write_text("".join(json.dumps({"path": f"masks/{i}.png", "lr": f"{i}.png",
                                                               "error": "ValueError: corrupt"}) + "\n" for i in range(3)))
    for run, n in ((empty, 0), (failed, 3)):
        _open(d, build_run_report(run).index)
        _page_clean(d)
        assert d.execute_script("return document.querySelectorAll('.card').length") == 0
        assert d.find_element("id", "table-status").text == f"all {n} images loaded"
        assert d.execute_script("return document.querySelector('[data-stat=failed] b').textContent") == str(n)
        assert _download(d, "dl-train") == b"" and _download(d, "dl-val") == b""
