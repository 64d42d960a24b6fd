"""Benchmarks for desra_fast.

- ``benchmarks.inputs``      deterministic, real-looking GAN-SR / MSE-SR pairs (+ ADE20K label maps)
- ``benchmarks.authors``     the authors' released pipeline (float64 filter2D, per-region loop)
- ``benchmarks.composition`` the fastest OpenCV/scipy composition a skilled user would write
- ``benchmarks.timing``      the shared timing helpers (warm-up, interleaved rounds, medians of
                             per-round ratios, machine and load description, table formats)
- ``benchmarks.bench_dmap``, ``bench_premask``, ``bench_postprocess``, ``bench_detect``: one
  benchmark per operation (D map, pre-mask, post-processing, whole detection);
  ``benchmarks.isa_paths``: every CPU-kernel instruction-set path side by side
- ``benchmarks.compare``     ``python -m benchmarks.compare``: runs them per size in one process
  and writes RESULTS.md (RESULTS_ISA.md with ``--isa-paths-only``)
- ``benchmarks/test_bench_*.py`` pytest-benchmark suite, run explicitly with
  ``python -m pytest benchmarks --benchmark-enable`` (the default test run only collects tests/).

The measurement diary of the CPU kernels (what was tried, what each change measured) is
``benchmarks/cpu-kernels-diary.md``.
"""
