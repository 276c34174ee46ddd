#!/usr/bin/env bash
# The GPU check: lens_steer with --device cuda, on a machine with torch, transformers, peft, safetensors,
# pyarrow, tqdm and jinja2, no network, and none of transformer-lens, optuna, plotly, datasets or gguf.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine; writes $OUT/gpu_check.json
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: CPU, small model, few items (checks the logic)
#
# What it measures is in benchmarks/gpu_check.py. Carried pure-Python wheels (benchmarks/gpu_wheels, 2.1 MB)
# are unpacked into a temporary folder only where a module is missing; import-time stand-ins for datasets
# and pandas (benchmarks/gpu_stubs) likewise. The run stops after $GPU_CHECK_TIMEOUT seconds (default 420,
# leaving room for a rerun in a 15-minute device budget); results written before then are kept.
# PYTHON picks the interpreter (default python3); extra arguments go to gpu_check.py.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-$ROOT/runs/gpu_check}"
LIMIT="${GPU_CHECK_TIMEOUT:-420}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SITE="$WORK/site"
mkdir -p "$SITE"

(cd "$HERE/gpu_wheels" && sha256sum -c --quiet SHA256SUMS)
while read -r module wheel; do
  [ -n "$module" ] || continue
  if ! "$PY" -c "import $module" 2>/dev/null; then
    "$PY" -m zipfile -e "$HERE/gpu_wheels/$wheel" "$SITE"  # a pure-Python wheel is a zip of the installed files
    echo "gpu_check: using carried $wheel" >&2
  fi
done < "$HERE/gpu_wheels/MODULES"
for module in datasets pandas; do
  if ! "$PY" -c "import $module" 2>/dev/null; then
    cp -r "$HERE/gpu_stubs/$module" "$SITE/"
    echo "gpu_check: $module is missing; using its import-time stand-in" >&2
  fi
done

export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
timeout "$LIMIT" "$PY" "$HERE/gpu_check.py" --out "$OUT_DIR/gpu_check.json" "$@" || status=$?
if [ "$status" -eq 124 ]; then
  echo "gpu_check: stopped after ${LIMIT}s; partial results in $OUT_DIR/gpu_check.json" >&2
fi
exit "$status"
