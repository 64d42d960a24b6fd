"""Ahead-of-time compilation of the Triton kernels for given GPU targets (no GPU needed).

``compile_stage1(target, dtype, fused, ...)`` runs the whole Triton pipeline (TTIR -> TTGIR ->
LLVM IR -> PTX -> cubin via ptxas) for one specialisation of ``stage1_kernel``. CI uses it for
sm_80 and sm_90 so that a kernel that would not lower fails the build. Must be called in a
process where TRITON_INTERPRET is unset (under the interpreter the kernels are not JIT functions);
``compile_in_subprocess`` takes care of that.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import triton
from triton.backends.compiler import GPUTarget

from . import _launch

# Triton signature type of each supported input dtype.
POINTER_TYPES = {"uint8": "*u8", "uint16": "*u16", "float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32"}


def stage1_signature(dtype: str, fused: bool) -> dict:
    """Argument types of stage1_kernel for one input dtype (all strides as generic i64)."""
    from .stage1 import stage1_kernel

    names = stage1_kernel.arg_names
    sig = {}
    for name in names:
        if name in ("gan_ptr", "mse_ptr"):
            sig[name] = POINTER_TYPES[dtype]
        elif name == "out_ptr":
            sig[name] = "*u8" if fused else "*fp32"
        elif name == "labels_ptr":
            sig[name] = "*u8"
        elif name in ("wtab64_ptr", "taps2d_ptr", "params64_ptr"):
            sig[name] = "*fp64"
        elif name == "taps_ptr":
            sig[name] = "*fp32"
        elif name in ("Ho", "Wo", "n_weights"):
            sig[name] = "i32"
        elif name.endswith(("_sN", "_sC", "_sH", "_sW")):
            sig[name] = "i64"
        elif name in ("scale2", "rho", "thr_lo", "thr_hi"):
            sig[name] = "fp32"
        else:
            sig[name] = "constexpr"
    return sig


def compile_stage1(arch: int, dtype: str, fused: bool, has_labels: bool = True, channels: int = 3,
                   block_w: int = _launch.GPU_BW, block_h: int = _launch.GPU_BH,
                   num_warps: int | None = None):
    """Compile one specialisation of stage1_kernel for GPUTarget('cuda', arch, 32); returns the
    CompiledKernel (asm['ptx'], asm['cubin'], metadata with n_regs / n_spills when available)."""
    from .stage1 import stage1_kernel

    if not hasattr(stage1_kernel, "arg_names") or type(stage1_kernel).__name__ != "JITFunction":
        raise RuntimeError("compile_stage1 needs TRITON_INTERPRET unset when desra_fast.kernels is imported")
    constexprs = {
        "C": channels, "FUSED_MASK": fused, "HAS_LABELS": has_labels and fused,
        "CP": 1 << (channels - 1).bit_length(), "BH": block_h, "BW": block_w,
    }
    if num_warps is None:
        num_warps = _launch.gpu_warps(channels)
    src = triton.compiler.ASTSource(fn=stage1_kernel, signature=stage1_signature(dtype, fused),
                                    constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def stage1_cases(arch: int) -> list[dict]:
    """The specialisations CI compiles: D map and fused mask (with labels) for every input dtype
    with 3 channels, plus 1 channel and the label-free mask."""
    cases = [{"arch": arch, "dtype": dt, "fused": fused, "has_labels": fused, "channels": 3}
             for dt in POINTER_TYPES for fused in (False, True)]
    cases.append({"arch": arch, "dtype": "uint8", "fused": False, "has_labels": False, "channels": 1})
    cases.append({"arch": arch, "dtype": "float32", "fused": True, "has_labels": False, "channels": 1})
    return cases


# Every @triton.jit kernel that is launched from Python, with the cases that compile it.
KERNEL_CASES = {"stage1_kernel": stage1_cases}


def _resource_usage(cubin: bytes) -> str:
    """cuobjdump -res-usage line (registers, spills as LOCAL) when Triton's bundled cuobjdump runs."""
    import shutil
    import tempfile

    try:
        from triton import knobs

        tool = os.path.join(os.path.dirname(knobs.nvidia.ptxas.path), "cuobjdump")
    except Exception:  # pragma: no cover - layout of the Triton wheel differs
        tool = shutil.which("cuobjdump")
    if not tool or not os.path.exists(tool):
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    return next((ln.strip() for ln in out.splitlines() if "REG:" in ln), "")


def compile_report(arch: int, dtype: str, fused: bool, has_labels: bool = True, channels: int = 3) -> dict:
    """compile_stage1 + a JSON-able summary (PTX target, sizes, float64 instructions, resources)."""
    import re

    k = compile_stage1(arch, dtype, fused, has_labels, channels)
    ptx = k.asm["ptx"]
    target_line = next((ln for ln in ptx.splitlines() if ln.startswith(".target")), "")
    return {
        "arch": arch, "dtype": dtype, "fused": fused, "has_labels": has_labels, "channels": channels,
        "ptx_target": target_line.strip(), "ptx_chars": len(ptx), "cubin_bytes": len(k.asm["cubin"]),
        "f64_math": sorted(set(re.findall(r"\b(?:sqrt|div|rcp|rsqrt)\.[a-z.]*f64\b", ptx))),
        "resources": _resource_usage(k.asm["cubin"]),
    }


def compile_in_subprocess(cases: list[dict], timeout: float = 900.0) -> list[dict]:
    """Run compile_report(**case) for each case in a fresh interpreter with TRITON_INTERPRET unset
    (the calling process may be running the kernels under the interpreter). Raises
    RuntimeError with the child's stderr if any compilation fails."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys\n"
            "from desra_fast.kernels.aot import compile_report\n"
            "cases = json.loads(sys.stdin.read())\n"
            "print(json.dumps([compile_report(**c) for c in cases]))\n")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(cases), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"Triton AOT compilation failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
