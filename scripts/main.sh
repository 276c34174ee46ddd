#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job on the embedded SmolLM2 and the shared data.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
export LENS_STEER_DATA="${LENS_STEER_DATA:-$here/../shared/data}"
venv="${LENS_STEER_VENV:-$here/.venv}"
"$venv/bin/lens-steer" reproduce --budget "${LENS_STEER_BUDGET:-smoke}" --out "${1:-runs/smoke}"
