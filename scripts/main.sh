#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job on the embedded SmolLM2 and the shared data: first the ground truth
# (the bias model organism, built on first use and then reused, studied at the smoke budget into RUN_DIR-organism),
# then the embedded model's own study into RUN_DIR, whose report opens with the organism's ground-truth section.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
export LENS_STEER_DATA="${LENS_STEER_DATA:-$here/../shared/data}"
venv="${LENS_STEER_VENV:-$here/.venv}"
out="${1:-runs/smoke}"
budget="${LENS_STEER_BUDGET:-smoke}"
"$venv/bin/lens-steer" reproduce --model smollm2-organism --budget "$budget" --out "$out-organism"
"$venv/bin/lens-steer" reproduce --budget "$budget" --out "$out" --ground-truth "$out-organism"
