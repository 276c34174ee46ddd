#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the test suite: unit tests on tiny random models, integration
# tests on the embedded SmolLM2, then the TransformerLens 3.x leg. Fails when no test ran.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
export LENS_STEER_DATA="${LENS_STEER_DATA:-$here/../shared/data}"
export TOKENIZERS_PARALLELISM=false
venv="${LENS_STEER_VENV:-$here/.venv}"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
if [ -f scripts/test_tl3.sh ] && [ "${LENS_STEER_SKIP_TL3:-0}" != "1" ]; then
  bash scripts/test_tl3.sh
fi
