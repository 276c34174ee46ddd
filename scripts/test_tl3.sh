#!/usr/bin/env bash
# Second CI leg: transformer-lens 3.9 (HookedTransformer still shipped) in its own venv.
# Runs the steering / extraction / vector / token / residual-reuse and shared-prefix unit tests on the tiny model,
# built as a TL 3.x HookedTransformer (and, where TL 3.9 ships it, also as a TransformerBridge).
# Usage: scripts/test_tl3.sh [extra pytest args]; venv: $LENS_STEER_TL3_VENV (default .venv-tl3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LENS_STEER_TL3_VENV:-$here/.venv-tl3}"
main_venv="${LENS_STEER_VENV:-$here/.venv}"
[ -x "$main_venv/bin/python" ] || bash "$here/scripts/setup.sh"
# Layered over the main venv (scripts/setup.sh): a .pth file adds the main venv's site-packages after this venv's own,
# so only what TL 3.9 needs that the main venv lacks or pins otherwise is installed here (transformer-lens itself,
# better-abc, ...); pip leaves the main venv's files alone ("outside environment").
if [ ! -x "$venv/bin/python" ]; then
  base_python="$("$main_venv/bin/python" -c "import sys; print(sys._base_executable)")"  # the main venv's interpreter
  "$base_python" -m venv "$venv"
fi
purelib() { "$1/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
echo "import site; site.addsitedir('$(purelib "$main_venv")')" > "$(purelib "$venv")/zz_lens_steer_main_venv.pth"  # its .pth files (the editable lens_steer) too
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(not m.version('transformer-lens').startswith('3.9.'))" 2>/dev/null; then
  # TL 3.9 itself requires transformers>=5.9; <5.24 avoids the KV-cache generation bug (docs/platform.md).
  "${pip[@]}" "transformer-lens==3.9.*" "transformers>=5.9,<5.24" "torch==2.13.0"
fi
"$venv/bin/python" -W ignore -c "import importlib.metadata as m; from transformer_lens import HookedTransformer; print('transformer-lens', m.version('transformer-lens'), '/ transformers', m.version('transformers'))"
cd "$here"
# Tiny models gain nothing from threads, and two OpenMP threads on a busy 2-core machine run ~10x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_steering.py tests/test_extract.py tests/test_vectors.py tests/test_tokens.py tests/test_residual_cache.py tests/test_shared_prefix.py "$@"
