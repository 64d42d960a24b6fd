#!/usr/bin/env bash
# Installs desra_fast and everything its tests, benchmarks and demo need, on a fresh machine
# (idempotent: re-running only rebuilds the extension). CUDA kernels are compiled too when nvcc
# is on PATH (DESRA_WITH_CUDA=OFF to skip); nothing CUDA needs a GPU to build or import.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r requirements-dev.txt
if grep -qv '^\s*\(#\|$\)' requirements-nodeps.txt; then
  $PY -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
fi
# --no-build-isolation: build with the pybind11/cmake just installed (no second download).
$PY -m pip install -q --disable-pip-version-check --no-build-isolation -e .
$PY -c "import desra_fast; print('desra_fast', desra_fast.__version__, '| CUDA:', desra_fast.cuda_status())"
