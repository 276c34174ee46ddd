"""A content-keyed store of BBQ predictions and MMLU records: finished evaluations are read back (resumable
runs), and every number in a report traces to a `predictions/<name>.jsonl` file. `through_store` is the one
"read if stored, else compute and store" path."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.data.bbq import BbqItem
from lens_steer.errors import LensSteerError
from lens_steer.files import file_lock, json_sha256, sha256_hex, write_json, write_jsonl
from lens_steer.forward.questions import SCORING_VERSION
from lens_steer.model.fingerprint import model_fingerprint
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.model.tokens import BOS_POLICY
from lens_steer.steering.interventions import Additive, Intervention
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.metrics import BbqPrediction

_FIELDS = tuple(f.name for f in dataclasses.fields(BbqPrediction))


def vector_digest(vector: SteeringVector | None) -> str:
    """A hash of a vector's layers, hook and values (None: "none")."""
    if vector is None:
        return "none"
    h = hashlib.sha256(vector.metadata.hook.encode())
    for layer, v in vector.directions.items():
        h.update(str(layer).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


Steering = SteeringVector | Intervention | None  # what an evaluation was steered by (a vector is read with its coeff)


def steering_spec(steering: Steering, coeff: float) -> dict[str, Any]:
    """The part of a store key that says how predictions were steered: a vector's digest and coefficient, or an
    intervention's kind, parameters and digest (so an ablation never reads back an additive result)."""
    if isinstance(steering, Intervention):
        if type(steering) is Additive:  # the same key as the vector at that coefficient
            return {"vector": vector_digest(steering.vector), "coeff": float(steering.coeff)}
        return {
            "vector": steering.digest(),
            "coeff": float(steering.params().get("coeff", 0.0)),
            "intervention": steering.describe(),
        }
    return {"vector": vector_digest(steering), "coeff": float(coeff) if steering is not None else 0.0}


def _model_of(steering: Steering) -> str | None:
    return steering.metadata.model_name if steering is not None else None


def items_digest(keys: Sequence[Sequence[Any]]) -> str:
    """A hash of the evaluated items' identities, in order."""
    return json_sha256([list(k) for k in keys], 16)


def content_digest(item: Any) -> str:
    """A hash of every field of a dataclass item (text, answers, label...): an edited data file changes it."""
    return json_sha256(dataclasses.asdict(item), 12)


def prediction_settings(model: HookedModel, scoring: str, prompt_format: str, **extra: Any) -> dict[str, Any]:
    """The store settings of predictions by `model` under `scoring` and `prompt_format` (plus `extra`, e.g. the
    benchmark)."""
    return {
        "model": model_identity(model).name,
        "model_fingerprint": model_fingerprint(model),
        "scoring": scoring,
        "prompt_format": prompt_format,
        **extra,
    }


class PredictionStore:
    """Predictions under `root/predictions/`, keyed by everything that determines them. Several processes may
    share one store: `index.json` is updated under a lock, each file written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "predictions"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "index.json"

    def bbq(
        self,
        items: Sequence[BbqItem],
        vector: Steering,
        coeff: float,
        settings: dict[str, Any],
        compute: Callable[[], list[BbqPrediction]],
    ) -> list[BbqPrediction]:
        """The predictions for (items, vector, coeff, settings): read if stored, else computed and stored."""
        keys = [[i.category, i.example_id, i.source, content_digest(i)] for i in items]
        rows = self.rows(
            keys,
            vector,
            coeff,
            settings,
            lambda: [p.to_dict() for p in compute()],
            categories=sorted({i.category for i in items}),
        )
        return [
            BbqPrediction(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items() if k in _FIELDS})
            for r in rows
        ]

    def mmlu(
        self,
        items: Sequence[Any],
        vector: Steering,
        coeff: float,
        settings: dict[str, Any],
        compute: Callable[[], list[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """The MMLU records for (items, vector, coeff, settings): read if stored, else computed and stored."""
        keys = [[it.subject, it.index, content_digest(it)] for it in items]
        return self.rows(keys, vector, coeff, settings, compute, categories=sorted({it.subject for it in items}))

    def rows(
        self,
        item_keys: Sequence[Sequence[Any]],
        vector: Steering,
        coeff: float,
        settings: dict[str, Any],
        compute: Callable[[], list[dict[str, Any]]],
        *,
        categories: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """One JSON row per item for (items, vector, coeff, settings): read if stored, else computed and stored.

        `item_keys` identify the items (e.g. BBQ category, example id and source); `settings` hold the rest
        (model, scoring, prompt format, benchmark)."""
        spec = {
            "model": _model_of(vector) or settings.get("model"),
            **steering_spec(vector, coeff),
            "items": items_digest(item_keys),
            "scoring_version": SCORING_VERSION,
            "bos_policy": BOS_POLICY,
            **settings,
        }
        key = json_sha256(spec, 20)
        path = self.dir / f"{key}.jsonl"
        if path.is_file():
            stored = self._verified(key, path, len(item_keys))
            if stored is not None:
                return stored
        rows = compute()
        write_jsonl(path, rows)
        entry = {
            **spec,
            "file": path.name,
            "n": len(rows),
            "sha256": sha256_hex(path.read_bytes()),
            "categories": list(categories),
            "vector_method": vector.metadata.method if vector is not None else None,
            "intervention_kind": vector.kind if isinstance(vector, Intervention) else None,
            "vector_provenance": _short_provenance(vector),
        }
        with file_lock(self.dir / "index.lock"):  # another writer's entries, added since, are re-read and kept
            index = self._index()
            index[key] = entry
            write_json(self.index_path, index)
        return rows

    def _index(self) -> dict[str, Any]:
        """index.json, or {} when it is absent or damaged (its files are then recomputed, never trusted)."""
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def _verified(self, key: str, path: Path, n: int) -> list[dict[str, Any]] | None:
        """The rows of a stored file whose bytes match the checksum its index entry recorded, else None
        (truncated, edited, half-written or unindexed files are recomputed)."""
        entry = self._index().get(key)
        data = path.read_bytes()
        if not isinstance(entry, dict) or entry.get("sha256") != sha256_hex(data):
            return None
        try:
            rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        except ValueError:
            return None
        return rows if len(rows) == n and all(isinstance(r, dict) for r in rows) else None


def through_store(
    store_dir: str | Path | None,
    benchmark: str,
    items: Sequence[Any],
    vector: Steering,
    coeff: float,
    settings: Callable[[], dict[str, Any]],
    compute: Callable[[], Any],
) -> Any:
    """`compute()`'s BBQ predictions or MMLU records for `items`, read back from the store under `store_dir` when
    stored there and stored when computed; without a `store_dir`, always computed (`settings()` is not called)."""
    if store_dir is None:
        return compute()
    store = PredictionStore(store_dir)
    if benchmark == "bbq":
        return store.bbq(items, vector, coeff, settings(), compute)
    if benchmark == "mmlu":
        return store.mmlu(items, vector, coeff, settings(), compute)
    raise LensSteerError(f"the prediction store holds bbq and mmlu predictions, not {benchmark!r}")


def _short_provenance(vector: Steering) -> dict[str, Any] | None:
    if vector is None:
        return None
    prov = vector.metadata.provenance
    return {k: prov[k] for k in ("axis", "ensemble", "operation", "seed", "of", "params", "axes") if k in prov}
