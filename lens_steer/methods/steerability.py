"""Per-item steerability (Tan et al., NeurIPS 2024): what steering does to each BBQ item, not only on average.

- margin: an item's correct-answer log-probability margin, log p(label) - max over the other answers of
  log p (over the answers' normalised log-probabilities); > 0 exactly when the model answers correctly.
- change: steered margin - unsteered margin per item; the share moved the wrong way is the share with a
  change below 0 (interval: percentile bootstrap over items, lens_steer.tasks.metrics.bootstrap_ci).
- slope: where a coefficient sweep exists, the least-squares slope of each item's margin over the
  coefficients (Tan et al.'s per-input steerability); a negative slope is "anti-steerable".
- steerability bias, on disambiguated items only (the right answer is a person, never "unknown"): the mean
  change of each answer *position*'s log-probability and of the "unknown" option's, each against the mean of
  the other options. A vector that raises one position or "unknown" whatever the item is biased in that way;
  it is flagged when that contrast's interval lies above 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lens_steer.errors import LensSteerError
from lens_steer.stats import Metric, bootstrap_ci, metrics_to_dict
from lens_steer.tasks.metrics import BbqPrediction

Key = tuple[str, int]


def correct_margin(p: BbqPrediction) -> float:
    """log p(label) - max log p(other answers), from the prediction's option log-probabilities."""
    lp = p.option_logprobs
    if not lp:
        raise LensSteerError(
            f"BBQ prediction {p.category}/{p.example_id} has no option log-probabilities; per-item margins need them"
        )
    return float(lp[p.label] - max(lp[i] for i in range(len(lp)) if i != p.label))


@dataclasses.dataclass(frozen=True)
class MarginChange:
    """One item's margin without and with steering."""

    category: str
    example_id: int
    context_condition: str
    label: int
    base: float
    steered: float

    @property
    def delta(self) -> float:
        """Steered minus unsteered margin."""
        return self.steered - self.base


def _index(preds: Sequence[BbqPrediction], name: str) -> dict[Key, BbqPrediction]:
    out: dict[Key, BbqPrediction] = {}
    for p in preds:
        key = (p.category, p.example_id)
        if key in out:
            raise LensSteerError(f"{name} predictions hold {p.category}/{p.example_id} twice")
        out[key] = p
    return out


def aligned(
    base: Sequence[BbqPrediction], steered: Sequence[BbqPrediction]
) -> list[tuple[BbqPrediction, BbqPrediction]]:
    """(base, steered) prediction pairs of the same items, in the base's order; both runs must hold the same items."""
    b, s = _index(base, "base"), _index(steered, "steered")
    if b.keys() != s.keys():
        raise LensSteerError(
            f"per-item comparison needs the same items: {len(b.keys() - s.keys())} only in base, "
            f"{len(s.keys() - b.keys())} only in steered"
        )
    if not b:
        raise LensSteerError("no BBQ predictions to compare (empty selection)")
    for k in b:
        if b[k].label != s[k].label or b[k].unknown_index != s[k].unknown_index:
            raise LensSteerError(f"item {k[0]}/{k[1]} differs between base and steered (label or unknown answer)")
    return [(b[k], s[k]) for k in b]


def margin_changes(base: Sequence[BbqPrediction], steered: Sequence[BbqPrediction]) -> list[MarginChange]:
    """Every item's margin without and with steering."""
    return [
        MarginChange(x.category, x.example_id, x.context_condition, x.label, correct_margin(x), correct_margin(y))
        for x, y in aligned(base, steered)
    ]


def wrong_way_share(deltas: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> Metric:
    """Share of items whose margin change is below 0, with its bootstrap interval."""
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        raise LensSteerError("no margin changes to count")
    return bootstrap_ci((d < 0).astype(float), n_boot=n_boot, seed=seed, vectorized=True)


def margin_slopes(sweep: Mapping[float, Sequence[BbqPrediction]]) -> dict[Key, float]:
    """Per item, the least-squares slope of its margin over the sweep's coefficients (at least two)."""
    coeffs = sorted(float(c) for c in sweep)
    if len(coeffs) < 2:
        raise LensSteerError(f"a slope needs at least two coefficients (got {coeffs})")
    tables = {c: _index(sweep[c], f"coefficient {c}") for c in coeffs}
    keys = list(tables[coeffs[0]])
    if any(tables[c].keys() != set(keys) for c in coeffs):
        raise LensSteerError("every coefficient of the sweep must hold the same items")
    x = np.array(coeffs)
    xc = x - x.mean()
    out = {}
    for k in keys:
        y = np.array([correct_margin(tables[c][k]) for c in coeffs])
        out[k] = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    return out


def steerability_bias(
    base: Sequence[BbqPrediction], steered: Sequence[BbqPrediction], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Does the vector favour an answer position or the "unknown" option regardless of the item? On
    disambiguated items: per position the mean change of its log-probability, and of the item's unknown
    option's, each minus the mean change of the other two options, with intervals; plus the mean margin
    change by the gold answer's position."""
    pairs = [(x, y) for x, y in aligned(base, steered) if x.context_condition == "disambig"]
    if not pairs:
        return {"n": 0, "note": "no disambiguated items"}
    delta = np.array([np.subtract(y.option_logprobs, x.option_logprobs) for x, y in pairs])  # [n, 3]
    k = delta.shape[1]

    def contrast(col: np.ndarray) -> np.ndarray:  # an option's change minus the mean change of the others
        picked = delta[np.arange(len(delta)), col]
        return picked - (delta.sum(axis=1) - picked) / (k - 1)

    position = {
        str(j): bootstrap_ci(contrast(np.full(len(delta), j)), n_boot=n_boot, seed=seed, vectorized=True)
        for j in range(k)
    }
    unknown = bootstrap_ci(
        contrast(np.array([x.unknown_index for x, _ in pairs])), n_boot=n_boot, seed=seed, vectorized=True
    )
    margins = np.array([correct_margin(y) - correct_margin(x) for x, y in pairs])
    gold = np.array([x.label for x, _ in pairs])
    by_gold = {
        str(j): bootstrap_ci(margins[gold == j], n_boot=n_boot, seed=seed, vectorized=True)
        for j in range(k)
        if (gold == j).any()
    }
    favoured = [j for j, m in position.items() if m.ci_low > 0]
    return metrics_to_dict(
        {
            "n": len(pairs),
            "position_shift": position,
            "unknown_shift": unknown,
            "margin_change_by_gold_position": by_gold,
            "favoured_positions": favoured,
            "favours_unknown": bool(unknown.ci_low > 0),
            "unknown_rate": {
                "base": float(np.mean([x.pred_is_unknown for x, _ in pairs])),
                "steered": float(np.mean([y.pred_is_unknown for _, y in pairs])),
            },
        }
    )


def steerability_report(
    base: Sequence[BbqPrediction],
    steered: Sequence[BbqPrediction],
    *,
    sweep: Mapping[float, Sequence[BbqPrediction]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    bins: int = 20,
) -> dict[str, Any]:
    """Per-item steerability of one steered result, JSON-ready: the margin changes (per item), their mean
    and the wrong-way share (overall and per context condition) with intervals, a histogram, the slopes and
    their anti-steerable share when a sweep is given, and the steerability-bias check."""
    changes = margin_changes(base, steered)
    deltas = np.array([c.delta for c in changes])
    counts, edges = np.histogram(deltas, bins=bins)
    out: dict[str, Any] = {
        "n": len(changes),
        "mean_change": metrics_to_dict(bootstrap_ci(deltas, n_boot=n_boot, seed=seed, vectorized=True)),
        "median_change": float(np.median(deltas)),
        "wrong_way_share": metrics_to_dict(wrong_way_share(deltas, n_boot=n_boot, seed=seed)),
        "wrong_way_share_by_condition": {
            cond: metrics_to_dict(
                wrong_way_share([c.delta for c in changes if c.context_condition == cond], n_boot=n_boot, seed=seed)
            )
            for cond in ("ambig", "disambig")
            if any(c.context_condition == cond for c in changes)
        },
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "items": [dataclasses.asdict(c) | {"delta": c.delta} for c in changes],
        "bias": steerability_bias(base, steered, n_boot=n_boot, seed=seed),
    }
    if sweep is not None:
        out["slopes"] = slope_summary(sweep, n_boot=n_boot, seed=seed, items=True)
    return out


def slope_summary(
    sweep: Mapping[float, Sequence[BbqPrediction]], *, n_boot: int = 1000, seed: int = 0, items: bool = False
) -> dict[str, Any]:
    """The per-item margin slopes over a coefficient sweep, JSON-ready: the coefficients, the item count, the mean
    slope and the anti-steerable share (slope below 0) with intervals, and with `items` every item's slope."""
    slopes = margin_slopes(sweep)
    values = np.array(list(slopes.values()))
    out: dict[str, Any] = {
        "coeffs": sorted(float(c) for c in sweep),
        "n": int(values.size),
        "mean": metrics_to_dict(bootstrap_ci(values, n_boot=n_boot, seed=seed, vectorized=True)),
        "anti_steerable_share": metrics_to_dict(wrong_way_share(values, n_boot=n_boot, seed=seed)),
    }
    if items:
        out["items"] = [{"category": k[0], "example_id": k[1], "slope": v} for k, v in slopes.items()]
    return out
