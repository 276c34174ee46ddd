"""The paper's four claims (lens_steer.report.paper.CLAIMS) judged from a run's typed results, each with its
evidence; the rules are lens_steer.report.verdicts'. Reads numbers, never runs a model."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from lens_steer.pipeline.results import Results
from lens_steer.pipeline.results_entries import BbqBlock, MmluBlock, Paired, Steered
from lens_steer.report.paper import CLAIMS, PAPER_AXES
from lens_steer.report.verdicts import (
    Z95,
    Interval,
    Verdict,
    combine,
    fmt_ci,
    fmt_diff,
    fmt_p,
    judge_difference,
    judge_gain,
    judge_retention,
    mean_difference,
    paired_proportion_interval,
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper with its verdict and the evidence behind it."""

    key: str
    text: str
    verdict: str
    evidence: tuple[str, ...]


# ----------------------------------------------------------------------------- reading typed results
def in_distribution(results: Results) -> dict[str, BbqBlock]:
    """The test-split block of each axis (empty when the ensemble stage did not run)."""
    return dict(results.ensemble.in_distribution) if results.ensemble is not None else {}


def ordered_axes(axes: Sequence[str]) -> list[str]:
    """Paper order first, then any others in their given order."""
    return [a for a in PAPER_AXES if a in axes] + [a for a in axes if a not in PAPER_AXES]


def gain(entry: Steered) -> Interval:
    """A steered run's accuracy change over the baseline with its paired interval."""
    return Interval.of(entry.gain)


def steered_acc(entry: Steered | None) -> Interval | None:
    """A steered run's accuracy (None when it did not run)."""
    return None if entry is None else Interval.of(entry.vs_base.overall.acc.steered)


def control_diffs(entry: Steered) -> list[Interval]:
    """Steered minus each matched random control, paired on the same items."""
    return [Interval.of(c.steered_vs_control.overall.acc.diff) for c in entry.controls]


def control_gains(entry: Steered) -> list[Interval]:
    """Each matched random control's own accuracy change over the baseline."""
    return [Interval.of(c.vs_base.overall.acc.diff) for c in entry.controls]


def worst_control(entry: Steered) -> Interval | None:
    """The steered-minus-control difference with the lowest interval (None without controls)."""
    diffs = control_diffs(entry)
    return min(diffs, key=lambda d: d.lo) if diffs else None


def mmlu_change(mmlu: MmluBlock, name: str) -> Interval | None:
    """The MMLU accuracy change of `name` with the paired Agresti-Min interval from its discordant counts."""
    entry = mmlu.steered.get(name)
    if entry is None or entry.mcnemar is None:
        return None
    return paired_proportion_interval(entry.mcnemar.gained, entry.mcnemar.lost, mmlu.n)


def bias_variant(results: Results) -> str:
    """The bias-score variant of the run's numbers ("lm_eval" unless recorded otherwise)."""
    if results.meta is not None:
        return results.meta.bias_variant
    for block in in_distribution(results).values():
        for entry in block.steered.values():
            return entry.vs_base.bias_variant
    return "lm_eval"


def gain_evidence(name: str, entry: Steered, v: Verdict) -> str:
    """One line: the gain, McNemar's test, the worst matched control and the verdict."""
    mc = entry.vs_base.overall.mcnemar
    worst = worst_control(entry)
    ctrl = (
        "no control run"
        if worst is None
        else f"vs matched random control (worst of {len(entry.controls)}) {fmt_diff(worst)}"
    )
    counts = f"(gained {mc.gained}, lost {mc.lost})" if mc is not None else "(gained -, lost -)"
    return (
        f"{name}: gain {fmt_diff(gain(entry))} points (coeff {entry.coeff}), McNemar p={fmt_p(mc.p if mc else None)} "
        f"{counts}; {ctrl} -> {v.verdict} ({v.reason})"
    )


# ----------------------------------------------------------------------------- the four claims
def _claim_isv_every_axis(results: Results) -> Claim:
    rows = in_distribution(results)
    ev: list[str] = []
    verdicts: list[str] = []
    for axis in ordered_axes(list(rows)):
        entry = rows[axis].steered.get("isv")
        if entry is None:
            continue
        v = judge_gain(gain(entry), control_diffs(entry))
        verdicts.append(v.verdict)
        ev.append(gain_evidence(axis, entry, v))
    verdict = combine(verdicts)
    missing = [a for a in PAPER_AXES if a not in rows or "isv" not in rows[a].steered]
    if verdict == "held" and missing:
        verdict = "inconclusive"
        ev.append(f"only {len(verdicts)} of {len(PAPER_AXES)} axes were run (missing: {', '.join(missing)})")
    return Claim("isv_every_axis", CLAIMS["isv_every_axis"], verdict, tuple(ev))


def _control_margin(rows: Mapping[str, BbqBlock], name: str) -> Interval | None:
    """Mean over axes of `name`'s accuracy above its matched controls (per axis: the mean over seeds,
    with the widest seed's interval), with an interval assuming independent axes."""
    parts = []
    for row in rows.values():
        entry = row.steered.get(name)
        diffs = control_diffs(entry) if entry is not None else []
        if diffs:
            value = sum(d.value for d in diffs) / len(diffs)
            sd = max(d.hi - d.lo for d in diffs) / (2 * Z95)
            parts.append((value, sd))
    if not parts:
        return None
    k = len(parts)
    mean = sum(p[0] for p in parts) / k
    half = Z95 * math.sqrt(sum(p[1] ** 2 for p in parts)) / k
    return Interval(mean, mean - half, mean + half)


def _gain_pairs(rows: Mapping[str, BbqBlock], a: str, b: str) -> list[tuple[Interval, Interval]]:
    return [
        (gain(rows[x].steered[a]), gain(rows[x].steered[b]))
        for x in ordered_axes(list(rows))
        if a in rows[x].steered and b in rows[x].steered
    ]


def _bias_change(entry: Steered) -> str:
    b = entry.vs_base.ambig.get("bias")
    return "-" if b is None else f"{b.base.value:+.3f} -> {b.steered.value:+.3f}"


def _direct(label: str, axis: str, paired: Paired | None) -> list[str]:
    if paired is None:
        return []
    overall = paired.overall
    return [
        f"{axis}: direct paired test {label} on the same items: {fmt_diff(Interval.of(overall.acc.diff))} points, "
        f"McNemar p={fmt_p(overall.mcnemar.p if overall.mcnemar else None)}"
    ]


def _claim_sve_beats_isv(results: Results) -> Claim:
    rows = in_distribution(results)
    ev: list[str] = []
    pairs = _gain_pairs(rows, "sve", "isv")
    if pairs:
        d = mean_difference(pairs)
        v_bbq = judge_difference(d)
        ev.append(
            f"mean over {len(pairs)} axes of (SVE gain - ISV gain): {fmt_diff(d)} points "
            f"(conservative normal interval) -> {v_bbq.verdict}"
        )
        margin = _control_margin(rows, "sve")
        if margin is None:
            v_bbq = Verdict("inconclusive", "no control") if v_bbq.verdict == "held" else v_bbq
            ev.append("SVE vs its matched random controls: no control run")
        else:
            ev.append(f"SVE above its matched random controls, mean over axes: {fmt_diff(margin)} points")
            if v_bbq.verdict == "held" and margin.lo <= 0:
                v_bbq = Verdict("inconclusive", "SVE not beyond its random controls")
                ev.append("SVE's edge is not beyond a random vector of the same norms -> inconclusive")
        for axis in ordered_axes(list(rows)):
            st = rows[axis].steered
            if "sve" in st and "isv" in st:
                ev.append(
                    f"{axis}: ISV {fmt_diff(gain(st['isv']))}, SVE {fmt_diff(gain(st['sve']))} points over baseline; "
                    f"ambiguous bias score ISV {_bias_change(st['isv'])}, SVE {_bias_change(st['sve'])}"
                )
                ev += _direct("SVE - ISV", axis, st["sve"].vs_isv)
        bbq_verdict = v_bbq.verdict
    else:
        bbq_verdict = "not run"
        ev.append("SVE or ISV test-split results: not run")
    mmlu = results.ensemble.mmlu if results.ensemble is not None else None
    change = mmlu_change(mmlu, "sve") if mmlu is not None else None
    if mmlu is None or change is None:
        mmlu_verdict = "not run"
        ev.append("MMLU retention: not run")
    else:
        vm = judge_retention(change)
        mmlu_verdict = vm.verdict
        sve = mmlu.steered["sve"]
        p = sve.mcnemar.p if sve.mcnemar is not None else None
        ev.append(
            f"MMLU with SVE: {fmt_ci(Interval.of(sve.acc))} vs baseline {fmt_ci(Interval.of(mmlu.baseline))} "
            f"(n={mmlu.n}); change {fmt_diff(change)} points (paired Agresti-Min interval), McNemar p={fmt_p(p)} -> "
            f"{vm.verdict} ({vm.reason})"
        )
    parts = [bbq_verdict, mmlu_verdict]
    verdict = (
        "not run"
        if all(p == "not run" for p in parts)
        else combine([p if p != "not run" else "inconclusive" for p in parts])
    )
    return Claim("sve_beats_isv", CLAIMS["sve_beats_isv"], verdict, tuple(ev))


def _claim_sve_ood(results: Results) -> Claim:
    ood = results.ensemble.ood if results.ensemble is not None else {}
    ev: list[str] = []
    verdicts: list[str] = []
    for cat, block in ood.items():
        if not isinstance(block, BbqBlock):
            ev.append(f"{cat}: not run ({block.reason})")
            continue
        entry = block.steered.get("sve")
        if entry is None:
            continue
        v = judge_gain(gain(entry), control_diffs(entry))
        verdicts.append(v.verdict)
        ev.append(gain_evidence(f"{cat} (n={block.n})", entry, v))
    rows = in_distribution(results)
    loo = [(a, rows[a].steered["sve_loo"]) for a in ordered_axes(list(rows)) if "sve_loo" in rows[a].steered]
    loo_verdicts = [judge_gain(gain(e), control_diffs(e)).verdict for _, e in loo]
    if loo:
        counts = {v: loo_verdicts.count(v) for v in ("held", "not held", "inconclusive")}
        ev.append(
            f"leave-one-axis-out SVE on the held-out axis: {counts['held']} held, {counts['not held']} not held, "
            f"{counts['inconclusive']} inconclusive of {len(loo)} axes"
            + ("" if verdicts else " (the verdict rests on these: no OOD category ran)")
        )
        if not verdicts:
            ev.extend(
                gain_evidence(f"{a} without its own ISV", e, judge_gain(gain(e), control_diffs(e))) for a, e in loo
            )
    verdict = combine(verdicts if verdicts else loo_verdicts)
    return Claim("sve_ood", CLAIMS["sve_ood"], verdict, tuple(ev))


def _claim_merged_worse(results: Results) -> Claim:
    rows = in_distribution(results)
    pairs = _gain_pairs(rows, "sve", "merged")
    if not pairs:
        return Claim(
            "merged_worse", CLAIMS["merged_worse"], "not run", ("SVE or merged-vector test-split results: not run",)
        )
    d = mean_difference(pairs)
    v = judge_difference(d)
    ev = [
        f"mean over {len(pairs)} axes of (SVE gain - merged gain): {fmt_diff(d)} points (conservative normal "
        f"interval) -> {v.verdict} ({v.reason})"
    ]
    for axis in ordered_axes(list(rows)):
        st = rows[axis].steered
        if "sve" in st and "merged" in st:
            ev.append(
                f"{axis}: SVE {fmt_diff(gain(st['sve']))}, merged {fmt_diff(gain(st['merged']))} points over baseline"
            )
            ev += _direct("merged - SVE", axis, st["merged"].vs_sve)
    return Claim("merged_worse", CLAIMS["merged_worse"], v.verdict, tuple(ev))


def judge_claims(results: Results) -> list[Claim]:
    """The paper's four claims, each with its verdict and evidence; all inconclusive when no intervals were computed."""
    claims = [
        _claim_isv_every_axis(results),
        _claim_sve_beats_isv(results),
        _claim_sve_ood(results),
        _claim_merged_worse(results),
    ]
    if results.ensemble is not None and results.ensemble.n_boot == 0:
        claims = [
            dataclasses.replace(
                c,
                verdict="inconclusive" if c.verdict != "not run" else c.verdict,
                evidence=c.evidence + ("no intervals were computed (n_boot=0)",),
            )
            for c in claims
        ]
    return claims


__all__ = [
    "Claim",
    "bias_variant",
    "control_diffs",
    "control_gains",
    "gain",
    "gain_evidence",
    "in_distribution",
    "judge_claims",
    "mmlu_change",
    "ordered_axes",
    "steered_acc",
    "worst_control",
]
