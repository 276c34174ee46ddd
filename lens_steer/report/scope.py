"""What a run can and cannot show, the report's first section: its budget, the items behind each number, how wide
its intervals are (the smallest gain it could tell from 0), whether it is a pipeline check (the `smoke` budget) and
whether the unsteered model is above chance at all. Reads results, never runs a model."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from lens_steer.pipeline.results import Results, finite
from lens_steer.report.claims import gain, in_distribution, ordered_axes
from lens_steer.report.verdicts import CHANCE, Interval, chance_word, pct

SCOPE_HEADING = "## What this run can show"
SMOKE_NOTICE = (
    "**This is a `smoke` budget run: a pipeline check, not a result.** It shows that every stage runs end to end "
    "and writes its files; its numbers rest on a handful of items and search trials, so none of its verdicts is "
    "evidence for or against the paper's claims. Run the `small` or `paper` budget for numbers to read."
)


def half_width(x: Interval) -> float | None:
    """Half the width of a 95% interval, in points (None when no interval was computed)."""
    return 50 * (x.hi - x.lo) if finite(x.lo) and finite(x.hi) else None


def _median_points(intervals: Sequence[Interval]) -> float | None:
    widths = [w for w in map(half_width, intervals) if w is not None]
    return statistics.median(widths) if widths else None


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo} to {hi}"


def _budget_line(results: Results) -> str:
    meta = results.meta
    if meta is None:
        return "- Budget: unknown (the run's metadata is missing)."
    d = meta.budget_detail
    parts = [
        f"{d['trials']} search trials per axis" if "trials" in d else None,
        f"at most {d['test_limit']} test items per axis" if "test_limit" in d else None,
        f"{len(d['control_seeds'])} random control(s) per vector" if "control_seeds" in d else None,
        f"{d['mmlu_items']} MMLU items" if "mmlu_items" in d else None,
        f"{d['n_boot']} bootstrap resamples" if "n_boot" in d else None,
    ]
    detail = ", ".join(p for p in parts if p)
    return f"- Budget: `{meta.budget}`" + (f" ({detail})." if detail else ".")


def _items_line(results: Results) -> str:
    rows = in_distribution(results)
    cap = results.capability or {}
    counts = [b.n for b in rows.values()] or [c.n for c in cap.values()]
    if not counts:
        return "- Items: no BBQ test split was evaluated."
    line = f"- Items: {_span(counts)} BBQ test items per axis on {len(counts)} axes"
    first = next(((a, e.vs_base) for a, b in rows.items() for e in b.steered.values()), None)
    if first is not None:
        line += f" ({first[0]}: {first[1].ambig.n} ambiguous, {first[1].disambig.n} disambiguated)"
    elif not rows:
        line += " (the baseline only)"
    mm = results.ensemble.mmlu if results.ensemble is not None else None
    line += f"; {mm.n} MMLU items" if mm is not None else ""
    return line + f". One item moves an axis's accuracy by {100 / min(counts):.1f} points."


def _width_line(results: Results) -> str:
    rows = in_distribution(results)
    base = [Interval.of(rows[a].baseline["acc"]) for a in rows] or [
        Interval.of(c.metrics["acc"]) for c in (results.capability or {}).values()
    ]
    gains = [gain(e) for r in rows.values() for e in r.steered.values()]
    b, g = _median_points(base), _median_points(gains)
    if b is None and g is None:
        return (
            "- Intervals: none were computed (no bootstrap resamples, or no evaluation ran), so no verdict can be "
            "*held*: every claim is at best *inconclusive*."
        )
    parts = []
    if b is not None:
        parts.append(f"an axis's accuracy is known to about ±{b:.1f} points (median half-width of its 95% interval)")
    if g is not None:
        parts.append(
            f"a paired gain to about ±{g:.1f} points: a gain smaller than about {g:.0f} points cannot be told from 0 "
            "here, and *inconclusive* means the interval holds 0, not that steering does nothing"
        )
    return "- Intervals: " + "; ".join(parts) + "."


def _chance_line(results: Results) -> str:
    cap = results.capability
    if not cap:
        return "- Chance: the unsteered model was not evaluated, so whether it is above chance is unknown."
    words = {a: chance_word(Interval.of(cap[a].metrics["acc"])) for a in ordered_axes(list(cap))}
    weak = [a for a, w in words.items() if w != "above chance"]
    if not weak:
        return f"- Chance: the unsteered model is above chance ({pct(CHANCE)}%, three options) on every axis."
    where = "every axis" if len(weak) == len(words) else f"{len(weak)} of {len(words)} axes ({', '.join(weak)})"
    return (
        f"- **Chance: the unsteered model is at or below chance ({pct(CHANCE)}%, three options) on {where}.** "
        "A model at chance cannot be debiased in any meaningful sense: a gain there is a shift of its answer "
        'prior (often toward "unknown"), not better use of the context.'
    )


def scope_lines(results: Results) -> list[str]:
    """The section as Markdown lines: the smoke notice on a `smoke` run, then budget, items, intervals and chance."""
    smoke = results.meta is not None and results.meta.budget == "smoke"
    return [
        SCOPE_HEADING,
        "",
        *([SMOKE_NOTICE, ""] if smoke else []),
        _budget_line(results),
        _items_line(results),
        _width_line(results),
        _chance_line(results),
    ]


__all__ = ["SCOPE_HEADING", "SMOKE_NOTICE", "half_width", "scope_lines"]
