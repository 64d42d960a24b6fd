"""Benchmarks for desra_fast (GitHub issue 3).

- ``benchmarks.inputs``      deterministic, real-looking GAN-SR / MSE-SR pairs (+ ADE20K label maps)
- ``benchmarks.authors``     the authors' released pipeline (float64 filter2D, per-region loop)
- ``benchmarks.composition`` the fastest OpenCV/scipy composition a skilled user would write
- ``benchmarks.compare``     ``python -m benchmarks.compare``: one-process comparison -> RESULTS.md
- ``benchmarks/test_bench_*.py`` pytest-benchmark suite, run explicitly with
  ``python -m pytest benchmarks --benchmark-enable`` (the default test run only collects tests/).
"""
