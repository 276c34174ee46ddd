#!/usr/bin/env bash
# Second CI leg: transformer-lens 3.9 (HookedTransformer still shipped) in its own venv.
# Runs the steering / extraction / vector / token / residual-reuse and shared-prefix unit tests on the tiny model,
# built as a TL 3.x HookedTransformer (and, where TL 3.9 ships it, also as a TransformerBridge).
# Usage: scripts/test_tl3.sh [extra pytest args]; venv: $LENS_STEER_TL3_VENV (default .venv-tl3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LENS_STEER_TL3_VENV:-$here/.venv-tl3}"
# shellcheck source=scripts/venv.sh
source "$here/scripts/venv.sh"
make_venv "$venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(not m.version('transformer-lens').startswith('3.9.'))" 2>/dev/null; then
  # TL 3.9 itself requires transformers>=5.9; <5.24 avoids the KV-cache generation bug (docs/platform.md).
  "${pip[@]}" "torch==2.13.0" "transformer-lens==3.9.*" "transformers>=5.9,<5.24" \
    einops jaxtyping safetensors tqdm numpy pytest
  "${pip[@]}" --no-deps -e "$here"
fi
"$venv/bin/python" -W ignore -c "import importlib.metadata as m; from transformer_lens import HookedTransformer; print('transformer-lens', m.version('transformer-lens'), '/ transformers', m.version('transformers'))"
cd "$here"
# Tiny models gain nothing from threads, and two OpenMP threads on a busy 2-core machine run ~10x slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_steering.py tests/test_extract.py tests/test_vectors.py tests/test_tokens.py tests/test_residual_cache.py tests/test_shared_prefix.py "$@"
