"""A reproduction's results (the `results.json` of `lens_steer.reproduce`) as `report.html` and `results.md`.

Reads numbers, never runs models. `results.md` sets our BBQ table in the paper's layout beside the
paper's published numbers (other models) and judges the claims of docs/method.md §6; `report.html`
holds the same text plus plotly figures, with one inline copy of plotly.js.

Verdicts (`judge_gain`, `judge_difference`, `judge_retention`):
- a steering gain is "held" when its paired 95% interval lies above 0 *and* it beats every matched
  random control (the steered-vs-control paired interval lies above 0); "not held" when the paired
  interval lies below 0; "inconclusive" otherwise (interval crossing 0, gain not beyond a random
  vector of the same norms, layers and coefficient, or no control run).
- a comparison of two steered runs ("SVE beats the mean ISV", "merged does worse than SVE") is judged
  on the mean over axes of the difference of their gains over the baseline, with a normal interval
  that is conservative (each axis's two paired intervals are combined as if perfectly anticorrelated,
  since results.json holds no direct paired test between the two steered runs).
- "keeps MMLU" is a non-inferiority verdict: "held" when the paired interval of the MMLU change lies
  above -RETENTION_MARGIN, "not held" when it lies below it.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.io import atomic_write_text

CHANCE = 1.0 / 3.0
Z95 = 1.959963984540054
RETENTION_MARGIN = 0.02  # "keeps MMLU": the change must be surely above -2 points
VERDICTS: tuple[str, ...] = ("held", "not held", "inconclusive", "not run")

# ----------------------------------------------------------------------------- the paper's numbers
PAPER_MODELS: tuple[str, ...] = ("Mistral-7B-Instruct-v0.1", "Llama-3.1-8B-Instruct", "Qwen2.5-7B-Instruct")
PAPER_AXES: tuple[str, ...] = (
    "age", "physical_appearance", "disability", "gender_identity", "nationality",
    "race_ethnicity", "religion", "sexual_orientation", "ses",
)  # fmt: skip
PAPER_AXIS_LABELS: dict[str, str] = {
    "age": "age",
    "physical_appearance": "physical appearance",
    "disability": "disability",
    "gender_identity": "gender",
    "nationality": "nationality",
    "race_ethnicity": "race",
    "religion": "religion",
    "sexual_orientation": "sexual orientation",
    "ses": "SES",
}


def _paper_rows(*rows: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    return {axis: {"baseline": b, "isv": i, "sve": s} for axis, (b, i, s) in zip(PAPER_AXES, rows, strict=True)}


PAPER_TABLE: dict[str, Any] = {
    "source": "Siddique et al. 2025, arXiv 2503.05371 v1 (docs/method.md §6)",
    "metric": "BBQ accuracy %, ambiguous and disambiguated pooled; reference letter scoring by generation; no held-out split",
    "models": {
        "Mistral-7B-Instruct-v0.1": {
            "bbq": _paper_rows((43.9, 55.2, 59.0), (52.2, 62.0, 67.3), (50.4, 66.4, 65.4), (51.6, 63.9, 64.4), (55.4, 72.3, 73.6),
                               (56.5, 66.2, 71.7), (56.5, 66.6, 70.3), (49.1, 61.8, 68.3), (52.4, 63.7, 69.3)),
            "mean_gain": {"isv": 12.2, "sve": 15.7},
            "mmlu": {"baseline": 50.1, "sve": 46.6},
        },
        "Llama-3.1-8B-Instruct": {
            "bbq": _paper_rows((62.2, 67.0, 67.9), (63.1, 65.1, 66.9), (68.4, 74.3, 74.7), (66.2, 76.1, 72.6), (76.1, 81.8, 82.4),
                               (80.7, 84.1, 86.8), (75.8, 78.3, 79.9), (79.7, 82.5, 81.6), (68.9, 74.5, 75.2)),
            "mean_gain": {"isv": 4.7, "sve": 5.2},
            "mmlu": {"baseline": 57.5, "sve": 58.1},
        },
        "Qwen2.5-7B-Instruct": {
            "bbq": _paper_rows((74.3, 80.0, 80.6), (75.6, 77.1, 77.2), (77.6, 79.7, 77.9), (77.5, 83.2, 82.1), (82.5, 85.3, 83.9),
                               (88.6, 91.0, 91.1), (78.2, 80.7, 81.1), (84.7, 87.4, 86.1), (86.0, 89.4, 89.0)),
            "mean_gain": {"isv": 3.2, "sve": 2.7},
            "mmlu": {"baseline": 66.7, "sve": 66.9},
        },
    },
}  # fmt: skip

CLAIMS: dict[str, str] = {
    "isv_every_axis": "ISV beats the baseline on every axis",
    "sve_beats_isv": "SVE beats the mean ISV on bias (BBQ accuracy) and keeps MMLU",
    "sve_ood": "SVE is steadier out of distribution (intersectional categories never used in optimisation)",
    "merged_worse": 'One "merged datasets" vector does worse than SVE',
}


class ReportError(LensSteerError):
    """Results that cannot be reported (not a results object, or a stage with a malformed shape)."""


# ----------------------------------------------------------------------------- numbers and verdicts
@dataclasses.dataclass(frozen=True)
class Interval:
    """A value with its 95% interval (fractions, not percent)."""

    value: float
    lo: float
    hi: float

    @classmethod
    def of(cls, metric: Mapping[str, Any]) -> Interval:
        """From a Metric dict {"value", "ci_low", "ci_high", ...}."""
        return cls(float(metric["value"]), float(metric["ci_low"]), float(metric["ci_high"]))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One of VERDICTS with the reason in a few words."""

    verdict: str
    reason: str


def judge_difference(diff: Interval) -> Verdict:
    """"held" when the interval lies above 0, "not held" when below, "inconclusive" when it holds 0."""
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
    return Verdict("inconclusive", "gain above 0 but not beyond a random vector of the same norms, layers and coefficient")


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
    standard deviation is taken as sd(a) + sd(b) (the bound for any correlation), sd from interval width / (2 * 1.96)."""
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


def context_reading(vs_base: Mapping[str, Any]) -> str:
    """What a steered run did, from its paired comparison split by context condition:
    more "unknown" even on disambiguated items (where it is always wrong), better on ambiguous items
    without a significant loss on disambiguated ones, better use of the context, or no clear change."""
    unk_dis = Interval.of(vs_base["disambig"]["unknown_rate"]["diff"])
    amb = Interval.of(vs_base["ambig"]["acc"]["diff"])
    dis = Interval.of(vs_base["disambig"]["acc"]["diff"])
    if unk_dis.lo > 0:
        return 'answers "unknown" more, also where the context gives the answer'
    if amb.lo > 0 and dis.hi >= 0:
        return "better on ambiguous items, disambiguated kept (debiasing pattern)"
    if dis.lo > 0:
        return "better use of disambiguating context"
    if amb.hi < 0 or dis.hi < 0:
        return "worse"
    return "no clear change"


# ----------------------------------------------------------------------------- formatting
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def fmt_ci(m: Interval | None) -> str:
    """'55.2 [49.1, 61.0]' in percent; 'not run' for None."""
    return "not run" if m is None else f"{_pct(m.value)} [{_pct(m.lo)}, {_pct(m.hi)}]"


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


def _chance_word(m: Interval) -> str:
    if m.lo > CHANCE:
        return "above chance"
    if m.hi < CHANCE:
        return "below chance"
    return "at chance"


# ----------------------------------------------------------------------------- reading results
def _stage(results: Mapping[str, Any], name: str) -> Any:
    """A stage's block, or None when it was skipped."""
    block = results.get(name)
    return block if block else None


def _in_distribution(results: Mapping[str, Any]) -> dict[str, Any]:
    ens = _stage(results, "ensemble") or {}
    return dict(ens.get("in_distribution") or {})


def _ordered_axes(axes: Sequence[str]) -> list[str]:
    """Paper order first, then any others in their given order."""
    return [a for a in PAPER_AXES if a in axes] + [a for a in axes if a not in PAPER_AXES]


def _steered_acc(entry: Mapping[str, Any] | None) -> Interval | None:
    return None if not entry else Interval.of(entry["vs_base"]["overall"]["acc"]["steered"])


def _gain(entry: Mapping[str, Any]) -> Interval:
    return Interval.of(entry["vs_base"]["overall"]["acc"]["diff"])


def _control_diffs(entry: Mapping[str, Any]) -> list[Interval]:
    return [Interval.of(c["steered_vs_control"]["overall"]["acc"]["diff"]) for c in entry.get("controls") or []]


def _worst_control(entry: Mapping[str, Any]) -> Interval | None:
    diffs = _control_diffs(entry)
    return min(diffs, key=lambda d: d.lo) if diffs else None


def _bias_variant(results: Mapping[str, Any]) -> str:
    meta = results.get("meta") or {}
    if meta.get("bias_variant"):
        return str(meta["bias_variant"])
    for row in _in_distribution(results).values():
        for entry in (row.get("steered") or {}).values():
            return str(entry["vs_base"].get("bias_variant", "lm_eval"))
    return "lm_eval"


def _no_intervals(results: Mapping[str, Any]) -> bool:
    cfg = (_stage(results, "ensemble") or {}).get("config") or {}
    return cfg.get("n_boot") == 0


def _gain_evidence(name: str, entry: Mapping[str, Any], v: Verdict) -> str:
    ov = entry["vs_base"]["overall"]
    mc = ov.get("mcnemar") or {}
    worst = _worst_control(entry)
    ctrl = "no control run" if worst is None else f"vs matched random control (worst of {len(entry['controls'])}) {fmt_diff(worst)}"
    return (f"{name}: gain {fmt_diff(_gain(entry))} points (coeff {entry.get('coeff')}), McNemar p={fmt_p(mc.get('p'))} "
            f"(gained {mc.get('gained', '-')}, lost {mc.get('lost', '-')}); {ctrl} -> {v.verdict} ({v.reason})")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of method.md §6 with its verdict and the evidence behind it."""

    key: str
    text: str
    verdict: str
    evidence: tuple[str, ...]


def _claim_isv_every_axis(results: Mapping[str, Any]) -> Claim:
    rows = _in_distribution(results)
    ev: list[str] = []
    verdicts: list[str] = []
    for axis in _ordered_axes(list(rows)):
        entry = (rows[axis].get("steered") or {}).get("isv")
        if not entry:
            continue
        v = judge_gain(_gain(entry), _control_diffs(entry))
        verdicts.append(v.verdict)
        ev.append(_gain_evidence(axis, entry, v))
    verdict = combine(verdicts)
    missing = [a for a in PAPER_AXES if a not in rows or not (rows[a].get("steered") or {}).get("isv")]
    if verdict == "held" and missing:
        verdict = "inconclusive"
        ev.append(f"only {len(verdicts)} of {len(PAPER_AXES)} axes were run (missing: {', '.join(missing)})")
    return Claim("isv_every_axis", CLAIMS["isv_every_axis"], verdict, tuple(ev))


def _control_margin(rows: Mapping[str, Any], name: str) -> Interval | None:
    """Mean over axes of `name`'s accuracy above its matched controls (per axis: the mean over seeds,
    with the widest seed's interval), with an interval assuming independent axes."""
    parts = []
    for row in rows.values():
        entry = (row.get("steered") or {}).get(name)
        diffs = _control_diffs(entry) if entry else []
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


def _gain_pairs(rows: Mapping[str, Any], a: str, b: str) -> list[tuple[Interval, Interval]]:
    out = []
    for axis in _ordered_axes(list(rows)):
        st = rows[axis].get("steered") or {}
        if st.get(a) and st.get(b):
            out.append((_gain(st[a]), _gain(st[b])))
    return out


def _mmlu_change(mmlu: Mapping[str, Any], name: str) -> Interval | None:
    entry = (mmlu.get("steered") or {}).get(name)
    if not entry or "mcnemar" not in entry:
        return None
    mc = entry["mcnemar"]
    return paired_proportion_interval(int(mc["gained"]), int(mc["lost"]), int(mmlu["n"]))


def _claim_sve_beats_isv(results: Mapping[str, Any]) -> Claim:
    rows = _in_distribution(results)
    ev: list[str] = []
    pairs = _gain_pairs(rows, "sve", "isv")
    if pairs:
        d = mean_difference(pairs)
        v_bbq = judge_difference(d)
        ev.append(f"mean over {len(pairs)} axes of (SVE gain - ISV gain): {fmt_diff(d)} points "
                  f"(conservative normal interval) -> {v_bbq.verdict}")  # fmt: skip
        margin = _control_margin(rows, "sve")
        if margin is None:
            v_bbq = Verdict("inconclusive", "no control") if v_bbq.verdict == "held" else v_bbq
            ev.append("SVE vs its matched random controls: no control run")
        else:
            ev.append(f"SVE above its matched random controls, mean over axes: {fmt_diff(margin)} points")
            if v_bbq.verdict == "held" and margin.lo <= 0:
                v_bbq = Verdict("inconclusive", "SVE not beyond its random controls")
                ev.append("SVE's edge is not beyond a random vector of the same norms -> inconclusive")
        for axis in _ordered_axes(list(rows)):
            st = rows[axis].get("steered") or {}
            if st.get("sve") and st.get("isv"):
                ev.append(f"{axis}: ISV {fmt_diff(_gain(st['isv']))}, SVE {fmt_diff(_gain(st['sve']))} points over baseline; "
                          f"ambiguous bias score ISV {_bias_change(st['isv'])}, SVE {_bias_change(st['sve'])}")  # fmt: skip
                direct = st["sve"].get("vs_isv")
                if direct:
                    ev.append(f"{axis}: direct paired test SVE - ISV on the same items: {fmt_diff(Interval.of(direct['overall']['acc']['diff']))} points, "
                              f"McNemar p={fmt_p(direct['overall']['mcnemar']['p'])}")  # fmt: skip
        bbq_verdict = v_bbq.verdict
    else:
        bbq_verdict = "not run"
        ev.append("SVE or ISV test-split results: not run")
    mmlu = _stage(results, "ensemble") and (results["ensemble"].get("mmlu") or None)
    change = _mmlu_change(mmlu, "sve") if mmlu else None
    if change is None:
        mmlu_verdict = "not run"
        ev.append("MMLU retention: not run")
    else:
        vm = judge_retention(change)
        mmlu_verdict = vm.verdict
        mc = mmlu["steered"]["sve"]["mcnemar"]
        ev.append(f"MMLU with SVE: {fmt_ci(Interval.of(mmlu['steered']['sve']['acc']))} vs baseline {fmt_ci(Interval.of(mmlu['baseline']))} "
                  f"(n={mmlu['n']}); change {fmt_diff(change)} points (paired Agresti-Min interval), McNemar p={fmt_p(mc.get('p'))} -> {vm.verdict} ({vm.reason})")  # fmt: skip
    parts = [bbq_verdict, mmlu_verdict]
    verdict = "not run" if all(p == "not run" for p in parts) else combine([p if p != "not run" else "inconclusive" for p in parts])
    return Claim("sve_beats_isv", CLAIMS["sve_beats_isv"], verdict, tuple(ev))


def _bias_change(entry: Mapping[str, Any]) -> str:
    b = entry["vs_base"]["ambig"].get("bias")
    return "-" if not b else f"{b['base']['value']:+.3f} -> {b['steered']['value']:+.3f}"


def _claim_sve_ood(results: Mapping[str, Any]) -> Claim:
    ens = _stage(results, "ensemble") or {}
    ood = ens.get("ood") or {}
    ev: list[str] = []
    verdicts: list[str] = []
    for cat, block in ood.items():
        if "skipped" in block:
            ev.append(f"{cat}: not run ({block['skipped']})")
            continue
        entry = (block.get("steered") or {}).get("sve")
        if not entry:
            continue
        v = judge_gain(_gain(entry), _control_diffs(entry))
        verdicts.append(v.verdict)
        ev.append(_gain_evidence(f"{cat} (n={block.get('n')})", entry, v))
    rows = _in_distribution(results)
    loo = [(a, rows[a]["steered"]["sve_loo"]) for a in _ordered_axes(list(rows)) if (rows[a].get("steered") or {}).get("sve_loo")]
    loo_verdicts = [judge_gain(_gain(e), _control_diffs(e)).verdict for _, e in loo]
    if loo:
        counts = {v: loo_verdicts.count(v) for v in ("held", "not held", "inconclusive")}
        ev.append(f"leave-one-axis-out SVE on the held-out axis: {counts['held']} held, {counts['not held']} not held, "
                  f"{counts['inconclusive']} inconclusive of {len(loo)} axes" + ("" if verdicts else " (the verdict rests on these: no OOD category ran)"))  # fmt: skip
        if not verdicts:
            ev.extend(_gain_evidence(f"{a} without its own ISV", e, judge_gain(_gain(e), _control_diffs(e))) for a, e in loo)
    verdict = combine(verdicts if verdicts else loo_verdicts)
    return Claim("sve_ood", CLAIMS["sve_ood"], verdict, tuple(ev))


def _claim_merged_worse(results: Mapping[str, Any]) -> Claim:
    rows = _in_distribution(results)
    pairs = _gain_pairs(rows, "sve", "merged")
    if not pairs:
        return Claim("merged_worse", CLAIMS["merged_worse"], "not run", ("SVE or merged-vector test-split results: not run",))
    d = mean_difference(pairs)
    v = judge_difference(d)
    ev = [f"mean over {len(pairs)} axes of (SVE gain - merged gain): {fmt_diff(d)} points (conservative normal interval) -> {v.verdict} ({v.reason})"]
    for axis in _ordered_axes(list(rows)):
        st = rows[axis].get("steered") or {}
        if st.get("sve") and st.get("merged"):
            ev.append(f"{axis}: SVE {fmt_diff(_gain(st['sve']))}, merged {fmt_diff(_gain(st['merged']))} points over baseline")
            direct = st["merged"].get("vs_sve")
            if direct:
                ev.append(f"{axis}: direct paired test merged - SVE on the same items: {fmt_diff(Interval.of(direct['overall']['acc']['diff']))} points, "
                          f"McNemar p={fmt_p(direct['overall']['mcnemar']['p'])}")  # fmt: skip
    return Claim("merged_worse", CLAIMS["merged_worse"], v.verdict, tuple(ev))


def judge_claims(results: Mapping[str, Any]) -> list[Claim]:
    """The four claims of method.md §6, each with its verdict and evidence."""
    _check(results)
    try:
        claims = [_claim_isv_every_axis(results), _claim_sve_beats_isv(results), _claim_sve_ood(results), _claim_merged_worse(results)]
    except (KeyError, TypeError) as e:
        raise ReportError(f"results.json: the ensemble stage lacks {e} where a claim needs it; re-run the pipeline's ensemble stage") from None
    if _no_intervals(results):
        claims = [dataclasses.replace(c, verdict="inconclusive" if c.verdict != "not run" else c.verdict,
                                      evidence=c.evidence + ("no intervals were computed (n_boot=0)",)) for c in claims]  # fmt: skip
    return claims


def _check(results: Any) -> None:
    if not isinstance(results, Mapping):
        raise ReportError(f"results must be a mapping (the object in results.json), got {type(results).__name__}")


# ----------------------------------------------------------------------------- markdown
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out


def _meta_lines(results: Mapping[str, Any]) -> list[str]:
    meta = results.get("meta") or {}
    keys = ("model", "budget", "seconds", "lens_steer_version", "scoring", "prompt_format", "split_seed", "storage")
    return [f"- {k}: {meta.get(k, 'unknown')}" for k in keys]


def _variant_line(results: Mapping[str, Any]) -> str:
    v = _bias_variant(results)
    if v == "lm_eval":
        return ("Bias scores are lm-evaluation-harness's: S_DIS = 2 * n_biased / n_non_unknown - 1 over disambiguated items, "
                "S_AMB = (1 - ambiguous accuracy) * (2 * n_biased / n_non_unknown - 1) over ambiguous items "
                "(not comparable with HELM's, which scales by 1 - overall accuracy).")  # fmt: skip
    return f"Bias scores are the {v} variant (see docs/method.md §5); not comparable with lm-evaluation-harness's."


def _our_row(row: Mapping[str, Any] | None) -> list[str]:
    if not row:
        return ["not run"] * 3
    st = row.get("steered") or {}
    return [fmt_ci(Interval.of(row["baseline"]["acc"])), fmt_ci(_steered_acc(st.get("isv"))), fmt_ci(_steered_acc(st.get("sve")))]


def _paper_cell(model: str, axis: str) -> str:
    r = PAPER_TABLE["models"][model]["bbq"].get(axis)
    return "-" if r is None else f"{r['baseline']:.1f} / {r['isv']:.1f} / {r['sve']:.1f}"


def results_markdown(results: Mapping[str, Any]) -> str:
    """results.md: our table in the paper's layout beside the paper's numbers, capability, gains split
    by context with controls, OOD and MMLU, and the claims of method.md §6 judged."""
    _check(results)
    try:
        return _results_markdown(results)
    except (KeyError, TypeError, AttributeError) as e:
        raise ReportError(f"results.json is malformed: a stage lacks {e}; re-run the stage that wrote it (reproduce resumes)") from None


def _results_markdown(results: Mapping[str, Any]) -> str:
    meta = results.get("meta") or {}
    model = meta.get("model", "unknown model")
    rows = _in_distribution(results)
    lines = [f"# lens_steer reproduction: {model}", "", *_meta_lines(results), "", _variant_line(results), ""]
    if results.get("ground_truth"):  # a bias model organism: the planted/clean verdicts come first
        from lens_steer.ground_truth import markdown as ground_truth_markdown

        lines += ground_truth_markdown(results["ground_truth"])

    lines += ["## BBQ accuracy (%), baseline / ISV / SVE", ""]
    lines += [f"Ours: {model}, test split, {meta.get('scoring', 'unknown')} scoring, 95% bootstrap intervals in brackets. "
              f"The paper's columns are **other models' published numbers** ({PAPER_TABLE['source']}; {PAPER_TABLE['metric']}): "
              "compare the direction and size of the gains, not the levels.", ""]  # fmt: skip
    header = ["axis", "ours baseline", "ours ISV", "ours SVE"] + [f"paper: {m} (b / ISV / SVE)" for m in PAPER_MODELS]
    table = []
    for axis in _ordered_axes(list(PAPER_AXES) + list(rows)):
        table.append([PAPER_AXIS_LABELS.get(axis, axis), *_our_row(rows.get(axis)), *(_paper_cell(m, axis) for m in PAPER_MODELS)])
    lines += _md_table(header, table)
    gains = _mean_gains(rows)
    paper_g = [f"ISV {PAPER_TABLE['models'][m]['mean_gain']['isv']:+.1f} / SVE {PAPER_TABLE['models'][m]['mean_gain']['sve']:+.1f}" for m in PAPER_MODELS]
    lines += ["", f"Mean gain over baseline (points): ours {gains}; paper " + "; ".join(f"{m} {g}" for m, g in zip(PAPER_MODELS, paper_g)) + ".", ""]

    lines += _md_capability(results)
    lines += _md_gains(results)
    lines += _md_ood(results)
    lines += _md_mmlu(results)
    lines += ["## Claims of method.md §6", "",
              "A claim is *held* when the paired 95% interval excludes 0 in the claimed direction and, for steering gains, "
              "the gain also beats every matched random control (same norms, layers and coefficient); *not held* when the "
              f"interval excludes 0 in the other direction; *inconclusive* otherwise. \"Keeps MMLU\" is held when the change's "
              f"interval lies above -{100 * RETENTION_MARGIN:g} points. Nine axes are judged without multiplicity correction; "
              "McNemar p-values are given beside each gain.", ""]  # fmt: skip
    for i, c in enumerate(judge_claims(results), 1):
        lines += [f"{i}. **{c.text}: {c.verdict.upper()}**", *(f"   - {e}" for e in c.evidence), ""]
    return "\n".join(lines).rstrip() + "\n"


def _mean_gains(rows: Mapping[str, Any]) -> str:
    parts = []
    for name, label in (("isv", "ISV"), ("sve", "SVE")):
        gs = [_gain(r["steered"][name]).value for r in rows.values() if (r.get("steered") or {}).get(name)]
        parts.append(f"{label} " + (f"{100 * sum(gs) / len(gs):+.1f} ({len(gs)} axes)" if gs else "not run"))
    return " / ".join(parts)


def _md_capability(results: Mapping[str, Any]) -> list[str]:
    cap = _stage(results, "capability")
    lines = ["## How capable the unsteered model is", ""]
    if not cap:
        return lines + ["Baseline evaluation: not run.", ""]
    lines += [f"Accuracy against chance ({_pct(CHANCE)}%, three options), per context condition; unknown-answer rates show whether the "
              "model uses the \"unknown\" option at all (it is the right answer on every ambiguous item and on no disambiguated one).", ""]  # fmt: skip
    header = ["axis", "n", "acc", "acc ambiguous", "acc disambiguated", "unknown rate ambig", "unknown rate disambig", "bias ambig", "bias disambig", "overall vs chance"]
    table = []
    for axis in _ordered_axes(list(cap)):
        c = cap[axis]
        acc = Interval.of(c["acc"])
        table.append([axis, c.get("n", "-"), fmt_ci(acc), *(fmt_ci(Interval.of(c[k])) if k in c else "-" for k in ("acc_ambig", "acc_disambig", "unknown_rate_ambig", "unknown_rate_disambig")),
                      *(f"{c[k]['value']:+.3f} [{c[k]['ci_low']:+.3f}, {c[k]['ci_high']:+.3f}]" if k in c else "-" for k in ("bias_ambig", "bias_disambig")), _chance_word(acc)])  # fmt: skip
    return lines + _md_table(header, table) + [""]


_VECTOR_LABELS = {"isv": "ISV", "sve": "SVE", "sve_norm": "SVE (norm-matched)", "sve_weighted": "SVE (coefficient-weighted)", "merged": "merged datasets", "sve_loo": "SVE without this axis"}
_GAIN_HEADER = ["target", "vector", "coeff", "acc", "gain", "gain ambig", "gain disambig", "Δunknown ambig", "Δunknown disambig", "McNemar p", "vs control (worst)", "reading"]


def _gain_rows(target: str, block: Mapping[str, Any]) -> list[list[str]]:
    out = []
    for name, entry in (block.get("steered") or {}).items():
        vb = entry["vs_base"]
        worst = _worst_control(entry)
        out.append([
            target, _VECTOR_LABELS.get(name, name), f"{entry.get('coeff')}", fmt_ci(_steered_acc(entry)), fmt_diff(_gain(entry)),
            fmt_diff(Interval.of(vb["ambig"]["acc"]["diff"])), fmt_diff(Interval.of(vb["disambig"]["acc"]["diff"])),
            fmt_diff(Interval.of(vb["ambig"]["unknown_rate"]["diff"])), fmt_diff(Interval.of(vb["disambig"]["unknown_rate"]["diff"])),
            fmt_p(vb["overall"].get("mcnemar", {}).get("p")), "no control" if worst is None else fmt_diff(worst), context_reading(vb),
        ])  # fmt: skip
    return out


def _md_gains(results: Mapping[str, Any]) -> list[str]:
    rows = _in_distribution(results)
    lines = ["## Gains split by context, beside matched random controls", ""]
    if not rows:
        return lines + ["Test-split evaluation of the steered models: not run.", ""]
    lines += ["Gains in points, paired 95% bootstrap intervals. \"vs control\": the steered run minus a random vector with the same "
              "norms, layers and coefficient (the worst of the control seeds). A debiased model gains on ambiguous items without "
              "answering \"unknown\" more on disambiguated ones.", ""]  # fmt: skip
    table = [r for axis in _ordered_axes(list(rows)) for r in _gain_rows(axis, rows[axis])]
    return lines + _md_table(_GAIN_HEADER, table) + [""]


def _md_ood(results: Mapping[str, Any]) -> list[str]:
    ens = _stage(results, "ensemble") or {}
    ood = ens.get("ood") or {}
    lines = ["## Out of distribution (intersectional BBQ categories)", ""]
    if not ood:
        return lines + ["Out-of-distribution evaluation: not run.", ""]
    table: list[list[str]] = []
    for cat, block in ood.items():
        if "skipped" in block:
            lines.append(f"- {cat}: not run ({block['skipped']})")
            continue
        lines.append(f"- {cat}: baseline {fmt_ci(Interval.of(block['baseline']['acc']))} (n={block.get('n')}, source {block.get('source')})")
        table += _gain_rows(cat, block)
    lines.append("")
    return lines + (_md_table(_GAIN_HEADER, table) + [""] if table else [])


def _md_mmlu(results: Mapping[str, Any]) -> list[str]:
    ens = _stage(results, "ensemble") or {}
    mm = ens.get("mmlu")
    lines = ["## MMLU retention", ""]
    if not mm:
        return lines + ["MMLU: not run.", ""]
    lines += [f"Baseline {fmt_ci(Interval.of(mm['baseline']))} (n={mm['n']}, chance 25.0). Changes with the paired Agresti-Min 95% interval from the discordant counts (results.json holds no paired bootstrap for MMLU).", ""]
    table = []
    for name, e in (mm.get("steered") or {}).items():
        change = _mmlu_change(mm, name)
        ctrls = e.get("controls") or []
        ctrl = "-" if not ctrls else f"{100 * sum(c['diff'] for c in ctrls) / len(ctrls):+.1f}"
        label = f"ISV ({name[4:]})" if name.startswith("isv:") else _VECTOR_LABELS.get(name, name)
        table.append([label, f"{e.get('coeff')}", fmt_ci(Interval.of(e["acc"])), fmt_diff(change),
                      fmt_p((e.get("mcnemar") or {}).get("p")), ctrl])  # fmt: skip
    return lines + _md_table(["vector", "coeff", "acc", "change", "McNemar p", "random controls' mean change"], table) + [""]


# ----------------------------------------------------------------------------- figures
def figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """The report's plotly figures by id; stages that were not run are left out."""
    import plotly.graph_objects as go

    from lens_steer.plots import cosine_heatmap, sweep_heatmap

    _check(results)
    out: dict[str, Any] = {}
    rows = _in_distribution(results)
    if rows:
        out["accuracy"] = _accuracy_figure(rows, go)
    sweep = _stage(results, "sweep")
    if sweep and sweep.get("rows") and sweep.get("baseline"):
        out["sweep"] = sweep_heatmap(sweep["rows"], sweep["baseline"], title=f"layer sweep ({sweep.get('axis', '?')}, validation)")
    geo = _stage(results, "geometry")
    if geo and geo.get("axes") and geo.get("cosine"):
        ref = geo.get("random_reference")
        note = f"layer {geo.get('layer')}; random directions in this space: mean |cos| ~ {ref:.3f}" if isinstance(ref, (int, float)) else f"layer {geo.get('layer')}"
        out["cosine"] = cosine_heatmap(geo["axes"], geo["cosine"], title="Axis x axis cosine similarity of steering directions", note=note)
    isv = _stage(results, "isv")
    if isv and any(v.get("history") for v in isv.values()):
        out["history"] = _history_figure(isv, go)
    return out


def _accuracy_figure(rows: Mapping[str, Any], go: Any) -> Any:
    axes = _ordered_axes(list(rows))
    fig = go.Figure()

    def add(name: str, values: list[Interval | None], **kw: Any) -> None:
        y = [None if v is None else 100 * v.value for v in values]
        plus = [None if v is None else 100 * (v.hi - v.value) for v in values]
        minus = [None if v is None else 100 * (v.value - v.lo) for v in values]
        fig.add_trace(go.Bar(name=name, x=axes, y=y, error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True}, **kw))

    add("baseline", [Interval.of(rows[a]["baseline"]["acc"]) for a in axes], marker_color="#888888")
    for name, colour in (("isv", "#1f77b4"), ("sve", "#d62728")):
        add(_VECTOR_LABELS[name], [_steered_acc((rows[a].get("steered") or {}).get(name)) for a in axes], marker_color=colour)
        ctrl = []
        for a in axes:
            e = (rows[a].get("steered") or {}).get(name)
            accs = [Interval.of(c["vs_base"]["overall"]["acc"]["steered"]) for c in (e or {}).get("controls") or []]
            ctrl.append(None if not accs else Interval(sum(x.value for x in accs) / len(accs), min(x.lo for x in accs), max(x.hi for x in accs)))
        add(f"{_VECTOR_LABELS[name]} random control", ctrl, marker_color=colour, opacity=0.35)
    fig.add_hline(y=100 * CHANCE, line={"dash": "dash", "color": "black"}, annotation_text="chance (1/3)")
    fig.update_layout(barmode="group", title="BBQ test accuracy per axis: baseline, ISV, SVE and their matched random controls (95% intervals)",
                      yaxis={"title": "accuracy %"}, xaxis={"title": "axis"})  # fmt: skip
    return fig


def _history_figure(isv: Mapping[str, Any], go: Any) -> Any:
    fig = go.Figure()
    for axis in _ordered_axes(list(isv)):
        hist = isv[axis].get("history") or []
        best: list[float | None] = []
        cur: float | None = None
        for v in hist:
            if v is not None and math.isfinite(float(v)):
                cur = float(v) if cur is None else max(cur, float(v))
            best.append(cur)
        fig.add_trace(go.Scatter(x=list(range(1, len(hist) + 1)), y=best, mode="lines+markers", name=axis))
    fig.update_layout(title="ISV search: best validation objective so far, per trial", xaxis={"title": "trial"}, yaxis={"title": "best objective so far"})
    return fig


# ----------------------------------------------------------------------------- HTML
_CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}.held{color:#1a7f37;font-weight:bold}.not-held{color:#b3261e;font-weight:bold}
.inconclusive,.not-run{color:#8a6d00;font-weight:bold}.note{color:#555}"""

_FIGURE_TEXT = {
    "accuracy": "Per-axis BBQ test accuracy with 95% bootstrap intervals; pale bars are the matched random controls (same norms, layers and coefficient; the bar spans the controls' intervals).",
    "sweep": "Validation metric by steered layer and coefficient; colours centred on the unsteered baseline.",
    "cosine": "Cosine similarity of the per-axis steering directions.",
    "history": "Best objective so far in each axis's ISV search (pruned trials carry the previous best).",
}


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """Escaped text with **bold** as <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _md_to_html(lines: Sequence[str]) -> str:
    """The small markdown subset results.md uses (headings, tables, bullets, paragraphs) as HTML."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append(_html_table(block[0], block[2:]))
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _claims_html(results: Mapping[str, Any]) -> str:
    parts = []
    for c in judge_claims(results):
        cls = c.verdict.replace(" ", "-")
        items = "".join(f"<li>{html.escape(e)}</li>" for e in c.evidence)
        parts.append(f"<li><span>{html.escape(c.text)}</span>: <span class=\"{cls}\">{c.verdict.upper()}</span><ul>{items}</ul></li>")
    return "<ol>" + "".join(parts) + "</ol>"


def report_html(results: Mapping[str, Any]) -> str:
    """A self-contained HTML report: one inline plotly.js, one div per figure, the results.md text and claims."""
    import plotly.offline

    _check(results)
    md = results_markdown(results).splitlines()
    claims_at = next((i for i, line in enumerate(md) if line.startswith("## Claims")), len(md))
    figs = figures(results)
    fig_html = []
    for key in ("accuracy", "sweep", "cosine", "history"):
        title = {"accuracy": "Accuracy per axis", "sweep": "Layer sweep", "cosine": "Axis geometry", "history": "Search histories"}[key]
        if key in figs:
            div = figs[key].to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{key}")
            fig_html.append(f"<h2>{title}</h2><p class=\"note\">{html.escape(_FIGURE_TEXT[key])}</p>{div}")
        else:
            fig_html.append(f"<h2>{title}</h2><p class=\"note\">not run</p>")
    model = html.escape(str((results.get("meta") or {}).get("model", "unknown model")))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>lens_steer reproduction: {model}</title><style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script></head><body>\n"
        f"{_md_to_html(md[:claims_at])}\n<h2>Claims of method.md §6</h2>{_md_to_html(md[claims_at + 1:claims_at + 3])}{_claims_html(results)}\n"
        + "\n".join(fig_html)
        + "\n</body></html>\n"
    )


def write_report(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write `out_dir/report.html` and `out_dir/results.md` atomically; returns {"html": path, "markdown": path}."""
    out = Path(out_dir)
    md = results_markdown(results)
    page = report_html(results)
    return {"html": atomic_write_text(out / "report.html", page), "markdown": atomic_write_text(out / "results.md", md)}


__all__ = [
    "CHANCE",
    "CLAIMS",
    "PAPER_AXES",
    "PAPER_MODELS",
    "PAPER_TABLE",
    "RETENTION_MARGIN",
    "Claim",
    "Interval",
    "ReportError",
    "Verdict",
    "combine",
    "context_reading",
    "figures",
    "judge_claims",
    "judge_difference",
    "judge_gain",
    "judge_retention",
    "mean_difference",
    "paired_proportion_interval",
    "report_html",
    "results_markdown",
    "write_report",
]
