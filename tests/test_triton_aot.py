"""Ahead-of-time compilation of every Triton kernel for sm_80 and sm_90 (no GPU needed): a kernel
that would not lower to PTX / cubin fails here. Compilation runs in child processes with
TRITON_INTERPRET unset (this process runs the kernels under the interpreter), one per target,
started together so the two targets compile in parallel."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARCHS = (80, 90)
KERNELS_DIR = Path(__file__).resolve().parents[1] / "kernels"

CHILD = """
import json, sys
from desra_fast.kernels.aot import KERNEL_CASES, compile_report
arch = int(sys.argv[1])
out = []
for name, cases in KERNEL_CASES.items():
    for case in cases(arch):
        rep = compile_report(**case)
        rep["kernel"] = name
        out.append(rep)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {arch: subprocess.Popen([sys.executable, "-c", CHILD, str(arch)], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for arch in ARCHS}
    results = {}
    for arch, p in procs.items():
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, f"sm_{arch} compilation failed:\n{err[-6000:]}"
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        results[arch] = json.loads(line[len("RESULT "):])
    return results


def jit_kernels_launched_from_python() -> set[str]:
    """Names of module-level @triton.jit functions in kernels/ that are not private helpers."""
    names = set()
    for path in KERNELS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                for dec in node.decorator_list:
                    src = ast.unparse(dec)
                    if src.startswith("triton.jit") or src.startswith("triton.autotune"):
                        names.add(node.name)
    return names


def test_every_kernel_has_aot_cases():
    from desra_fast.kernels.aot import KERNEL_CASES

    assert jit_kernels_launched_from_python() == set(KERNEL_CASES)


@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile_to_cubin(compiled, arch):
    reports = compiled[arch]
    from desra_fast.kernels.aot import KERNEL_CASES

    assert len(reports) == sum(len(cases(arch)) for cases in KERNEL_CASES.values())
    for rep in reports:
        label = f"sm_{arch} {rep['kernel']} {rep['dtype']} fused={rep['fused']} C={rep['channels']}"
        assert rep["ptx_target"].startswith(f".target sm_{arch}"), label
        assert rep["cubin_bytes"] > 0, label
        if rep["fused"]:
            # the float64 re-decision must use IEEE-rounded operations, never approximations
            assert set(rep["f64_math"]) <= {"sqrt.rn.f64", "div.rn.f64"}, (label, rep["f64_math"])
            assert "sqrt.rn.f64" in rep["f64_math"], label
        print(label, rep["resources"])
