"""Test configuration shared by the whole suite.

TRITON_INTERPRET must be set before any @triton.jit function is created (Triton reads it then),
so it is set here, before anything imports desra_fast.kernels: the Triton kernels then run on CPU
tensors under Triton's interpreter. No machine of this project has a GPU.
"""
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
# `python -m pytest` puts the repository root on sys.path, where the top-level kernels/ folder
# (installed as desra_fast.kernels) would shadow the PyPI package `kernels`, which transformers
# (a test-only reference) imports. desra_fast itself is imported from its installation.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _REPO]
sys.path.insert(0, os.path.dirname(__file__))  # tests/oracle.py, tests/images.py

from hypothesis import HealthCheck, settings  # noqa: E402

# Deterministic in CI (same examples every run), no per-example deadline (CI machines are shared).
settings.register_profile(
    "ci", derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
