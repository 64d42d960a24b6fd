"""Runtime instruction-set dispatch of the CPU kernels (csrc/include/desra/cpu_isa.h).

- ``desra_fast.cpu_info()`` reports the path in use and the ones this CPU can run;
- ``DESRA_CPU_ISA`` (read at import) forces a path: the one built module imports with every path
  forced and gives the float64 oracle's masks on a real GAN-SR / MSE-SR pair with each;
- a path the CPU cannot run, or an unknown name, is a clear error at import, not a crash;
- no code outside the per-ISA namespaces is compiled with AVX instructions (the linker could
  otherwise hand an AVX copy of a shared inline function to the baseline path).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import desra_fast
from desra_fast import _native

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {"avx512", "avx2", "baseline", "neon"}


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_cpu_info_contract():
    info = desra_fast.cpu_info()
    assert info["isa"] in KNOWN and info["isa"] == info["available"][0] or info["forced"]
    assert set(info["available"]) <= set(info["compiled"]) <= KNOWN
    assert info["isa"] in info["available"]
    assert info["available"][-1] in ("baseline", "neon")  # the baseline path always runs
    if info["machine"] in ("x86_64", "AMD64"):
        assert info["compiled"] == ["avx512", "avx2", "baseline"]
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        if re.search(r"\bavx512bw\b", flags) and re.search(r"\bavx512vl\b", flags):
            assert "avx512" in info["available"]
        if re.search(r"\bavx2\b", flags) and re.search(r"\bfma\b", flags):
            assert "avx2" in info["available"]


_DETECT = """
import json, sys, numpy as np, cv2, desra_fast
sys.path.insert(0, {tests!r})
from oracle import oracle_detect
out = {{"info": desra_fast.cpu_info(), "diff": {{}}, "sum": {{}}}}
for name in ("rocket", "motorcycle"):
    gan = cv2.imread({root!r} + "/samples/gan/" + name + ".png")[:, :, ::-1][:400, :500].copy()
    mse = cv2.imread({root!r} + "/samples/mse/" + name + ".png")[:, :, ::-1][:400, :500].copy()
    rng = np.random.default_rng(0)
    seg = np.repeat(np.repeat(rng.choice([2, 4, 12, 6, 9], (25, 32)), 16, 0), 16, 1)[:400, :500].astype(np.uint8)
    for thr in (0.7, 0.8):
        for s in (None, seg):
            got = desra_fast.detect(gan, mse, seg=s, threshold=thr, area_threshold=400, backend="cpu")
            want = oracle_detect(gan, mse, seg=s, threshold=thr, area_threshold=400)
            key = f"{{name}}/{{thr}}/{{s is not None}}"
            out["diff"][key] = int(np.count_nonzero(got != want))
            out["sum"][key] = int(got.sum())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def forced_runs():
    runs = {}
    for isa in desra_fast.cpu_info()["available"]:
        r = _run(_DETECT.format(tests=str(ROOT / "tests"), root=str(ROOT)), DESRA_CPU_ISA=isa)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[isa] = json.loads(r.stdout.strip().splitlines()[-1])
    return runs


def test_every_path_forced_at_import_gives_the_oracle_masks(forced_runs):
    for isa, run in forced_runs.items():
        assert run["info"]["isa"] == isa and run["info"]["forced"] == isa
        assert all(v == 0 for v in run["diff"].values()), (isa, run["diff"])
        assert any(v > 0 for v in run["sum"].values())  # the real pairs do have regions
    sums = {isa: run["sum"] for isa, run in forced_runs.items()}
    assert all(s == next(iter(sums.values())) for s in sums.values())


def test_unknown_path_is_a_clear_error():
    r = _run("import desra_fast", DESRA_CPU_ISA="sse9")
    assert r.returncode != 0 and "Segmentation" not in r.stderr
    assert "DESRA_CPU_ISA='sse9'" in r.stderr and "unknown CPU kernels" in r.stderr and "baseline" in r.stderr


def test_path_the_cpu_cannot_run_is_a_clear_error():
    # DESRA_CPU_DISABLE makes a path unrunnable on any CPU; on a CPU without AVX2 the same
    # message says which instructions are missing.
    r = _run("import desra_fast", DESRA_CPU_ISA="avx2", DESRA_CPU_DISABLE="avx2")
    assert r.returncode != 0
    assert "RuntimeError: DESRA_CPU_ISA='avx2'" in r.stderr and "cannot run on this CPU" in r.stderr
    r = _run("import desra_fast; print(desra_fast.cpu_info()['isa'])", DESRA_CPU_DISABLE="avx512,avx2")
    assert r.returncode == 0 and r.stdout.strip() in ("baseline", "neon")


def test_set_cpu_isa_rejects_bad_names_and_restores():
    before = _native.C.cpu_isa()
    with pytest.raises(ValueError, match="unknown CPU kernels"):
        _native.C._set_cpu_isa("avx1024")
    assert _native.C.cpu_isa() == before
    assert _native.C._set_cpu_isa("auto") == desra_fast.cpu_info()["available"][0]
    _native.C._set_cpu_isa(before)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_no_avx_code_outside_the_isa_namespaces():
    info = desra_fast.cpu_info()
    if info["native_build"] or info["machine"] != "x86_64":
        pytest.skip("only a portable x86-64 build separates its AVX code")
    so = _native.C.__file__
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", so], capture_output=True, text=True,
                         check=True).stdout
    if "<desra::" not in dis:
        pytest.skip("the module was stripped of its symbol table: functions cannot be told apart")
    bad, isa_fns, fn = [], 0, None
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn = m.group(1)
            continue
        if fn is None or "\t" not in line:
            continue
        ins = line.split("\t", 1)[1]
        if re.search(r"%zmm|%k[1-7]\b", ins):
            allowed = ("desra::avx512::",)
        elif re.search(r"%ymm|^v", ins):
            allowed = ("desra::avx512::", "desra::avx2::")
        else:
            continue
        if any(a in fn for a in allowed):
            isa_fns += 1
        else:
            bad.append((fn[:160], ins.strip()[:40]))
        fn = None  # one report per function
    assert isa_fns > 10, "no per-ISA code found: is this the dispatching build?"
    assert not bad, bad[:10]


def test_float32_path_worst_cases_on_every_path():
    # The float32 path's error is relative to the window variance; it is largest where a window's
    # reference pixel (its centre, or up to 2 rows away) lies far from the window mean: isolated
    # bright / dark pixels and single-level steps on flat bright backgrounds (uint8 and uint16).
    from test_native_dmap import check_premask, near_tie_thresholds, oracle_d

    rng = np.random.default_rng(14)
    h, w = 64, 150
    mse = np.full((2, h, w, 3), 200, np.int64)
    mse[0, rng.integers(0, h, 60), rng.integers(0, w, 60)] = 255      # sparse spikes
    mse[0, :, 75:] += (np.arange(w - 75) // 9)[None, :, None] % 2       # 1-level steps
    mse[1] = 240 - (rng.random((h, w, 3)) < 0.01) * 240                 # dark specks on bright
    gan = np.clip(mse + rng.normal(0, 25, mse.shape) * (rng.random((2, h, 1, 1)) < 0.5), 0, 255)
    before = _native.C.cpu_isa()
    try:
        for dtype, scale, k in ((np.uint8, 1.0, 1), (np.uint16, 255.0 / 65535.0, 257)):
            g, m = (gan * k).astype(dtype), (mse * k).astype(dtype)
            d64 = oracle_d(g, m, 0, scale)
            thresholds = [0.7, 0.95] + near_tie_thresholds(d64, 6, rng)
            for isa in desra_fast.cpu_info()["available"]:
                _native.C._set_cpu_isa(isa)
                d = _native.C.dmap(g, m, 0, scale)
                assert np.abs(d - d64).max() <= 1e-5, (isa, dtype)
                for thr in thresholds:
                    check_premask(g, m, None, None, thr, 0, scale, d64)
    finally:
        _native.C._set_cpu_isa(before)
