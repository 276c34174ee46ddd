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
# tests/test_report_browser.py opens the report in headless Chromium: Debian's chromium and chromium-driver, installed
# when missing (apt-get update only when the install fails; without them the test skips, and fails in CI)
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
  if command -v apt-get >/dev/null; then
    apt_install || { apt-get update -q && apt_install; } \
      || echo "warning: could not install chromium and chromium-driver with apt-get" >&2
  else
    echo "warning: no apt-get to install chromium and chromium-driver" >&2
  fi
fi
# Test files run in parallel (pytest-xdist; one file's tests stay on one worker, so its module fixtures are built once),
# each worker on one OpenMP thread: tiny models gain nothing from threads, and more threads than cores run ~10x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
workers="${LENS_STEER_TEST_WORKERS:-auto}"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile --durations=30 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
if [ -f scripts/test_tl3.sh ] && [ "${LENS_STEER_SKIP_TL3:-0}" != "1" ]; then
  bash scripts/test_tl3.sh
fi
