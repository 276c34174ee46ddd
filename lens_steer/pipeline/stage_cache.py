"""Finished pipeline stages kept as JSON files keyed by everything that determines them.

A stage file holds `{"inputs": ..., "result": ...}`: it is read back only when its recorded inputs equal the
ones asked for (model name and weights fingerprint, the budget's slice, seed, scoring, the data files' content,
the scoring and BOS versions), so a re-run with another budget, model, seed or data root recomputes the stage
instead of reusing stale numbers. An absent, damaged or old-format file is recomputed too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lens_steer.data.root import content_fingerprint, resolve_data_root
from lens_steer.files import write_json
from lens_steer.forward.questions import SCORING_VERSION
from lens_steer.model.fingerprint import model_key
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import BOS_POLICY


def model_inputs(model: HookedModel) -> dict[str, Any]:
    """What a stage's numbers depend on in the model: `lens_steer.model.fingerprint.model_key` (its name and
    fingerprint: depth, width, weight processing, dtype, a digest of its weights), plus the scoring and BOS
    versions of this code."""
    return {**model_key(model), "scoring_version": SCORING_VERSION, "bos_policy": BOS_POLICY}


def data_inputs(data_root: str | Path | None, parts: Sequence[str]) -> dict[str, str]:
    """`{part: digest of its files' names and bytes}` for the data root's `parts` (e.g. "bbq", "prompt_corpora")."""
    root = resolve_data_root(data_root)
    return {part: content_fingerprint(root / part) for part in parts}


def _normalised(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


def read_stage(path: str | Path, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored result at `path` when it was computed from `inputs`; None when absent, damaged or from other
    inputs."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("result"), dict)
        or obj.get("inputs") != _normalised(dict(inputs))
    ):
        return None
    return obj["result"]


def cached_stage(path: str | Path, inputs: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The stage's result for `inputs`: read back from `path` if it was stored from the same inputs, else
    computed and stored (atomically, with its inputs)."""
    found = read_stage(path, inputs)
    if found is not None:
        return found
    return write_stage(path, inputs, compute())


def write_stage(path: str | Path, inputs: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """Store `result` with the `inputs` it was computed from (atomically); returns it as it reads back."""
    write_json(path, {"inputs": _normalised(dict(inputs)), "result": dict(result)})
    return _normalised(dict(result))


__all__ = ["cached_stage", "data_inputs", "model_inputs", "read_stage", "write_stage"]
