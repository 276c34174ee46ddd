"""What a benchmark run returns: per-item records and JSON-ready metrics; the benchmarks `lens-steer eval` runs."""

from __future__ import annotations

import dataclasses
from typing import Any

from lens_steer.forward.generation import parse_counts
from lens_steer.tasks.metrics import BbqPrediction

BENCHES = ("bbq", "mmlu", "crows", "stereoset")  # each a module of lens_steer.tasks


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One benchmark run: per-item `records` (predictions.jsonl rows) and JSON-ready `metrics`."""

    bench: str
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    predictions: list[BbqPrediction] | None = None

    @property
    def parse_counts(self) -> dict[str, int] | None:
        """Under a generation protocol, how many answers each parse rule gave (lens_steer.forward.generation.parse_counts);
        None when no record has a parse rule. A rule's note after ";" (self-debias: the kept candidate) is dropped."""
        rules = [str(r["parse_rule"]).split(";", 1)[0] for r in self.records if r.get("parse_rule")]
        return parse_counts(rules) if rules else None
