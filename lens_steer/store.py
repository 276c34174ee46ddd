"""A content-keyed store of BBQ predictions: finished evaluations are read back (resumable runs), and every
number in a report traces to a `predictions/<name>.jsonl` file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.data.bbq import BbqItem
from lens_steer.evaluate import SCORING_VERSION
from lens_steer.io import write_json, write_jsonl
from lens_steer.metrics import BbqPrediction
from lens_steer.tokens import BOS_POLICY
from lens_steer.vectors import SteeringVector

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


def items_digest(keys: Sequence[Sequence[Any]]) -> str:
    """A hash of the evaluated items' identities, in order."""
    return hashlib.sha256(json.dumps([list(k) for k in keys]).encode()).hexdigest()[:16]


class PredictionStore:
    """Predictions under `root/predictions/`, keyed by everything that determines them."""

    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "predictions"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "index.json"

    def bbq(
        self,
        items: Sequence[BbqItem],
        vector: SteeringVector | None,
        coeff: float,
        settings: dict[str, Any],
        compute: Callable[[], list[BbqPrediction]],
    ) -> list[BbqPrediction]:
        """The predictions for (items, vector, coeff, settings): read if stored, else computed and stored."""
        keys = [[i.category, i.example_id, i.source] for i in items]
        rows = self.rows(keys, vector, coeff, settings, lambda: [p.to_dict() for p in compute()], categories=sorted({i.category for i in items}))
        return [BbqPrediction(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items() if k in _FIELDS}) for r in rows]

    def rows(
        self,
        item_keys: Sequence[Sequence[Any]],
        vector: SteeringVector | None,
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
            "model": vector.metadata.model_name if vector is not None else settings.get("model"),
            "vector": vector_digest(vector),
            "coeff": float(coeff) if vector is not None else 0.0,
            "items": items_digest(item_keys),
            "scoring_version": SCORING_VERSION,
            "bos_policy": BOS_POLICY,
            **settings,
        }
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
        path = self.dir / f"{key}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if len(rows) == len(item_keys):
                return rows
        rows = compute()
        write_jsonl(path, rows)
        index = json.loads(self.index_path.read_text()) if self.index_path.is_file() else {}  # read only when adding
        index[key] = {
            **spec,
            "file": path.name,
            "n": len(rows),
            "categories": list(categories),
            "vector_method": vector.metadata.method if vector is not None else None,
            "vector_provenance": _short_provenance(vector),
        }
        write_json(self.index_path, index)
        return rows


def _short_provenance(vector: SteeringVector | None) -> dict[str, Any] | None:
    if vector is None:
        return None
    prov = vector.metadata.provenance
    return {k: prov[k] for k in ("axis", "ensemble", "operation", "seed", "of", "params", "axes") if k in prov}
