"""Statistics and verdict rules of the report: intervals, held / not held / inconclusive, and what a steered run did.

- a steering gain is "held" when its paired 95% interval lies above 0 *and* it beats every matched random control
  (the steered-vs-control paired interval lies above 0); "not held" when the paired interval lies below 0;
  "inconclusive" otherwise (interval crossing 0, gain not beyond a random vector of the same norms, layers and
  coefficient, or no control run).
- a comparison of two steered runs averaged over axes (`mean_difference`) takes each axis's two paired gains with
  a conservative normal interval (as if perfectly anticorrelated); the per-axis direct paired tests between the
  runs (SVE vs ISV, merged vs SVE), which results.json also holds, are given beside it as evidence.
- "keeps MMLU" is a non-inferiority verdict: "held" when the paired interval of the MMLU change lies above
  -RETENTION_MARGIN, "not held" when it lies below it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from lens_steer.errors import LensSteerError
from lens_steer.pipeline.results_entries import Paired
from lens_steer.stats import Metric

CHANCE = 1.0 / 3.0
Z95 = 1.959963984540054
RETENTION_MARGIN = 0.02  # "keeps MMLU": the change must be surely above -2 points
VERDICTS: tuple[str, ...] = ("held", "not held", "inconclusive", "not run")


class ReportError(LensSteerError):
    """Numbers that cannot be judged (e.g. paired counts that do not fit their item count)."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A value with its 95% interval (fractions, not percent)."""

    value: float
    lo: float
    hi: float

    @classmethod
    def of(cls, metric: Metric) -> Interval:
        """From a Metric (value and interval)."""
        return cls(float(metric.value), float(metric.ci_low), float(metric.ci_high))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One of VERDICTS with the reason in a few words."""

    verdict: str
    reason: str


def judge_difference(diff: Interval) -> Verdict:
    """ "held" when the interval lies above 0, "not held" when below, "inconclusive" when it holds 0."""
    if diff.lo > 0:
        return Verdict("held", "95% interval above 0")
    if diff.hi < 0:
        return Verdict("not held", "95% interval below 0")
    return Verdict("inconclusive", "95% interval includes 0")


def judge_gain(diff: Interval, controls: Sequence[Interval] | None) -> Verdict:
    """A steering gain over the baseline (`diff`), with the steered-minus-control paired differences
    of its matched random controls: "held" needs `diff` above 0 and every control difference above 0."""
    base = judge_difference(diff)
    if base.verdict != "held":
        return base
    if not controls:
        return Verdict("inconclusive", "gain above 0 but no matched random control was run")
    if all(c.lo > 0 for c in controls):
        return Verdict("held", f"gain above 0 and above all {len(controls)} matched random control(s)")
    return Verdict(
        "inconclusive", "gain above 0 but not beyond a random vector of the same norms, layers and coefficient"
    )


def judge_retention(diff: Interval, margin: float = RETENTION_MARGIN) -> Verdict:
    """Non-inferiority: "held" when the change's interval lies above -margin, "not held" when below it."""
    if diff.lo > -margin:
        return Verdict("held", f"95% interval above -{100 * margin:g} points")
    if diff.hi < -margin:
        return Verdict("not held", f"95% interval below -{100 * margin:g} points")
    return Verdict("inconclusive", f"95% interval includes -{100 * margin:g} points")


def combine(verdicts: Sequence[str]) -> str:
    """All "held" -> "held"; any "not held" -> "not held"; nothing to judge -> "not run"; else "inconclusive"."""
    if not verdicts:
        return "not run"
    if any(v == "not held" for v in verdicts):
        return "not held"
    if all(v == "held" for v in verdicts):
        return "held"
    return "inconclusive"


def mean_difference(pairs: Sequence[tuple[Interval, Interval]]) -> Interval:
    """Mean over independent units of a - b, with a conservative normal 95% interval: each unit's
    standard deviation is taken as sd(a) + sd(b) (the bound for any correlation), sd from interval width
    / (2 * 1.96)."""
    if not pairs:
        raise ReportError("no units to average")
    k = len(pairs)
    mean = sum(a.value - b.value for a, b in pairs) / k
    var = sum(((a.hi - a.lo) / (2 * Z95) + (b.hi - b.lo) / (2 * Z95)) ** 2 for a, b in pairs)
    half = Z95 * math.sqrt(var) / k
    return Interval(mean, mean - half, mean + half)


def paired_proportion_interval(gained: int, lost: int, n: int) -> Interval:
    """Change in accuracy (gained - lost) / n of two runs on the same n items, with the Agresti-Min
    95% interval for matched proportions (Wald on the 2x2 table with 0.5 added to each cell, so it does
    not collapse to a point when no item changed): centre (g' - l') / n', se = sqrt(g' + l' - (g' - l')^2 / n') / n',
    g' = gained + 0.5, l' = lost + 0.5, n' = n + 2."""
    if n <= 0 or gained < 0 or lost < 0 or gained + lost > n:
        raise ReportError(f"paired counts gained={gained}, lost={lost} do not fit n={n} items")
    g, lo, m = gained + 0.5, lost + 0.5, n + 2
    centre = (g - lo) / m
    se = math.sqrt(max(0.0, (g + lo) - (g - lo) ** 2 / m)) / m
    return Interval((gained - lost) / n, centre - Z95 * se, centre + Z95 * se)


def context_reading(vs_base: Paired) -> str:
    """What a steered run did, from its paired comparison split by context condition:
    more "unknown" even on disambiguated items (where it is always wrong), better on ambiguous items
    without a significant loss on disambiguated ones, better use of the context, or no clear change."""
    unk = vs_base.disambig.get("unknown_rate")
    amb = Interval.of(vs_base.ambig.acc.diff)
    dis = Interval.of(vs_base.disambig.acc.diff)
    if unk is not None and Interval.of(unk.diff).lo > 0:
        return 'answers "unknown" more, also where the context gives the answer'
    if amb.lo > 0 and dis.hi >= 0:
        return "better on ambiguous items, disambiguated kept (debiasing pattern)"
    if dis.lo > 0:
        return "better use of disambiguating context"
    if amb.hi < 0 or dis.hi < 0:
        return "worse"
    return "no clear change"


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_ci(m: Interval | None) -> str:
    """'55.2 [49.1, 61.0]' in percent; 'not run' for None."""
    return "not run" if m is None else f"{pct(m.value)} [{pct(m.lo)}, {pct(m.hi)}]"


def fmt_diff(m: Interval | None) -> str:
    """'+5.2 [+1.0, +9.4]' in percentage points; 'not run' for None."""
    if m is None:
        return "not run"
    return f"{100 * m.value:+.1f} [{100 * m.lo:+.1f}, {100 * m.hi:+.1f}]"


def fmt_p(p: float | None) -> str:
    """A p-value to two significant digits."""
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def chance_word(m: Interval) -> str:
    if m.lo > CHANCE:
        return "above chance"
    if m.hi < CHANCE:
        return "below chance"
    return "at chance"


__all__ = [
    "CHANCE",
    "RETENTION_MARGIN",
    "VERDICTS",
    "Interval",
    "ReportError",
    "Verdict",
    "chance_word",
    "combine",
    "context_reading",
    "fmt_ci",
    "fmt_diff",
    "fmt_p",
    "judge_difference",
    "judge_gain",
    "judge_retention",
    "mean_difference",
    "paired_proportion_interval",
    "pct",
]
