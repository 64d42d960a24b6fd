#!/usr/bin/env bash
# Install (see install.sh) and run the main job on the bundled real GAN-SR / MSE-SR pairs:
# masks in demo_out/*.png, overlays (GAN-SR with regions tinted and outlined | MSE-SR) in
# demo_out/overlays/, one JSON line per image in demo_out/manifest.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
exec $PY -m desra_fast detect --gan samples/gan --mse samples/mse --out demo_out --overlay "$@"
