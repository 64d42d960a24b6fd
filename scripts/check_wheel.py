"""Imports a built desra_fast wheel with the CPU kernels forced to the x86-64 baseline path and
checks that it detects the same masks as the best path this CPU has.

    python scripts/check_wheel.py wheelhouse/desra_fast-*.whl   # unpacks it to a temporary folder
    python scripts/check_wheel.py                                # the installed desra_fast

The wheel is unpacked, not installed, and imported from that folder only (checked), so the check
does not touch the environment. Exit status 0 on success.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import os, sys
import cv2, numpy as np
import desra_fast
from desra_fast import _native
where = os.environ.get("DESRA_WHEEL_DIR")
if where and not os.path.realpath(desra_fast.__file__).startswith(os.path.realpath(where)):
    sys.exit(f"imported {desra_fast.__file__}, not the wheel in {where}")
info = desra_fast.cpu_info()
print("cpu_info:", info)
want = "neon" if info["machine"] == "aarch64" else "baseline"
assert info["isa"] == want and info["forced"] == want, info
assert not info["native_build"], "the wheel was built with DESRA_NATIVE=ON (not portable)"
samples = sys.argv[1]
total = 0
for name in ("rocket", "motorcycle"):
    gan = cv2.imread(f"{samples}/gan/{name}.png")[:, :, ::-1].copy()
    mse = cv2.imread(f"{samples}/mse/{name}.png")[:, :, ::-1].copy()
    for area in (4000, 300):
        _native.C._set_cpu_isa(want)
        base = desra_fast.detect(gan, mse, area_threshold=area, backend="cpu")
        _native.C._set_cpu_isa("auto")
        best = desra_fast.detect(gan, mse, area_threshold=area, backend="cpu")
        assert np.array_equal(base, best), f"{name}: baseline and {info['available'][0]} masks differ"
        total += int(base.sum())
assert total > 0, "no regions found on the sample pairs"
print(f"ok: {want} path imports and gives the {info['available'][0]} path's masks ({total} mask pixels)")
"""


def main(argv: list[str]) -> int:
    env = dict(os.environ, DESRA_CPU_ISA="neon" if os.uname().machine == "aarch64" else "baseline")
    with tempfile.TemporaryDirectory() as tmp:
        if argv:
            with zipfile.ZipFile(argv[0]) as z:
                z.extractall(tmp)
            env["PYTHONPATH"] = tmp
            env["DESRA_WHEEL_DIR"] = tmp
        proc = subprocess.run([sys.executable, "-s", "-c", CHECK, str(ROOT / "samples")], env=env, cwd=tmp)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
