"""What a benchmark run returns: per-item records and JSON-ready metrics; the benchmarks `lens-steer eval` runs."""

from __future__ import annotations

import dataclasses
from typing import Any

from lens_steer.forward.generation import parse_counts
from lens_steer.tasks.metrics import BbqPrediction

BENCHES = ("bbq", "mmlu", "crows", "stereoset")  # each a module of lens_steer.tasks
# The metrics a result's summary shows, per bench: (name shown, path into `metrics`).
HEADLINES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "bbq": tuple(
        (name, ("overall", name)) for name in ("acc", "acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig")
    ),
    "mmlu": (("acc", ("micro",)), ("macro_acc", ("macro",))),
    "crows": (("stereotype_preferred", ("overall",)),),
    "stereoset": tuple((name, ("overall", name)) for name in ("ss", "lms", "icat")),
}


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One benchmark run: per-item `records` (predictions.jsonl rows) and JSON-ready `metrics`."""

    bench: str
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    predictions: list[BbqPrediction] | None = None

    @property
    def parse_counts(self) -> dict[str, int] | None:
        """Under a generation protocol, how many answers each parse rule gave
        (lens_steer.forward.generation.parse_counts); None when no record has a parse rule. A rule's note after ";"
        (self-debias: the kept candidate) is dropped."""
        rules = [str(r["parse_rule"]).split(";", 1)[0] for r in self.records if r.get("parse_rule")]
        return parse_counts(rules) if rules else None

    @property
    def headline(self) -> dict[str, dict[str, Any]]:
        """The bench's main metrics (HEADLINES), each `{"value", "ci_low", "ci_high", "n"}`; absent ones left out."""
        out: dict[str, dict[str, Any]] = {}
        for name, path in HEADLINES.get(self.bench, ()):
            node: Any = self.metrics
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and "value" in node:
                out[name] = node
        return out

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" for name, m in self.headline.items()
        )
        return f"BenchResult({self.bench}, {len(self.records)} items" + (f": {shown})" if shown else ")")
