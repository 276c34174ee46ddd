"""results.md: the report's text as Markdown sections, in the order a researcher reads them.

What the run can show (lens_steer.report.scope: budget, items, interval widths, the smoke notice, chance); (on a bias
model organism, the ground truth;) the paper's claims with their verdicts; how capable the unsteered model is; then the
details: our BBQ table in the paper's layout beside its published numbers (and the later paper's v2 table when its
protocol or splits ran), the gains of every method (vectors and debiasing baselines) split by context beside their
random controls, per-item steerability, out of distribution, MMLU retention; last, how the run was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lens_steer.pipeline.results import Results
from lens_steer.pipeline.results_entries import BbqBlock
from lens_steer.report.claims import (
    Claim,
    bias_variant,
    gain,
    in_distribution,
    judge_claims,
    mmlu_change,
    ordered_axes,
    steered_acc,
    worst_control,
)
from lens_steer.report.method_tables import steerability_lines, v2_table_lines
from lens_steer.report.paper import CITATION, PAPER_AXES, PAPER_AXIS_LABELS, PAPER_MODELS, PAPER_TABLE, SHORT_CITATION
from lens_steer.report.scope import scope_lines
from lens_steer.report.tables import VECTOR_LABELS, cell, md_table
from lens_steer.report.verdicts import (
    CHANCE,
    RETENTION_MARGIN,
    Interval,
    chance_word,
    context_reading,
    fmt_ci,
    fmt_diff,
    fmt_p,
    pct,
)

GAIN_HEADER = [
    "target",
    "method",
    "coeff",
    "acc",
    "gain",
    "gain ambig",
    "gain disambig",
    "Δunknown ambig",
    "Δunknown disambig",
    "McNemar p",
    "vs control (worst)",
    "reading",
]
CLAIMS_HEADING = f"## Claims of {SHORT_CITATION}"
RUN_HEADING = "## How this run was made"


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report: a key ("head", "scope", "ground_truth", "claims", "capability", "paper_table",
    "v2_table", "gains", "steerability", "ood", "mmlu", "run") and its Markdown."""

    key: str
    markdown: str


def _join(lines: Sequence[str]) -> str:
    return "\n".join(lines).strip("\n") + "\n"


def _head(results: Results) -> list[str]:
    model = results.meta.model if results.meta is not None else "unknown model"
    return [f"# lens_steer reproduction: {model}", "", f"Reproducing {CITATION}."]


def _run(results: Results) -> list[str]:
    meta = results.meta
    keys = (
        "model",
        "budget",
        "seconds",
        "lens_steer_version",
        "scoring",
        "prompt_format",
        "split_seed",
        "storage",
        "protocol",
        "splits",
    )
    lines = [RUN_HEADING, ""]
    lines += [f"- {k}: {getattr(meta, k) if meta is not None else 'unknown'}" for k in keys]
    lines.append("")
    v = bias_variant(results)
    if v == "lm_eval":
        lines.append(
            "Bias scores are lm-evaluation-harness's: S_DIS = 2 × n_biased / n_non_unknown - 1 over disambiguated "
            "items, S_AMB = (1 - ambiguous accuracy) × (2 × n_biased / n_non_unknown - 1) over ambiguous items "
            "(not comparable with HELM's, which scales by 1 - overall accuracy)."
        )
    else:
        lines.append(f"Bias scores are the {v} variant; not comparable with lm-evaluation-harness's.")
    return lines


def _ground_truth(results: Results) -> list[str]:
    from lens_steer.report.ground_truth import markdown as ground_truth_markdown

    return ground_truth_markdown(results.ground_truth) if results.ground_truth else []


def claims_rule() -> str:
    """How a claim is judged, in one paragraph."""
    return (
        "A claim is *held* when the paired 95% interval excludes 0 in the claimed direction and, for steering gains, "
        "the gain also beats every matched random control (same norms, layers and coefficient); *not held* when the "
        'interval excludes 0 in the other direction; *inconclusive* otherwise. "Keeps MMLU" is held when the '
        f"change's interval lies above -{100 * RETENTION_MARGIN:g} points. Nine axes are judged without multiplicity "
        "correction; McNemar p-values are given beside each gain. report.html draws every gain with its interval "
        "beside its random control (a forest plot by axis and vector)."
    )


def _claims(claims: Sequence[Claim]) -> list[str]:
    lines = [CLAIMS_HEADING, "", claims_rule(), ""]
    for i, c in enumerate(claims, 1):
        lines += [f"{i}. **{c.text}: {c.verdict.upper()}**", *(f"   - {e}" for e in c.evidence), ""]
    return lines


def _capability(results: Results) -> list[str]:
    cap = results.capability
    lines = ["## How capable the unsteered model is", ""]
    if not cap:
        return lines + ["Baseline evaluation: not run."]
    lines += [
        f"Accuracy against chance ({pct(CHANCE)}%, three options), per context condition; unknown-answer rates show "
        'whether the model uses the "unknown" option at all (it is the right answer on every ambiguous item and on no '
        "disambiguated one).",
        "",
    ]
    header = [
        "axis",
        "n",
        "acc",
        "acc ambiguous",
        "acc disambiguated",
        "unknown rate ambig",
        "unknown rate disambig",
        "bias ambig",
        "bias disambig",
        "overall vs chance",
    ]
    table = []
    for axis in ordered_axes(list(cap)):
        m = cap[axis].metrics
        acc = Interval.of(m["acc"])
        table.append(
            [
                axis,
                cap[axis].n,
                fmt_ci(acc),
                *(
                    fmt_ci(Interval.of(m[k]))
                    for k in ("acc_ambig", "acc_disambig", "unknown_rate_ambig", "unknown_rate_disambig")
                ),
                *(
                    f"{m[k].value:+.3f} [{m[k].ci_low:+.3f}, {m[k].ci_high:+.3f}]"
                    for k in ("bias_ambig", "bias_disambig")
                ),
                chance_word(acc),
            ]
        )
    return lines + md_table(header, table)


def _our_row(row: BbqBlock | None) -> list[str]:
    if row is None:
        return ["not run"] * 3
    return [
        fmt_ci(Interval.of(row.baseline["acc"])),
        fmt_ci(steered_acc(row.steered.get("isv"))),
        fmt_ci(steered_acc(row.steered.get("sve"))),
    ]


def _paper_cell(model: str, axis: str) -> str:
    r = PAPER_TABLE["models"][model]["bbq"].get(axis)
    return "-" if r is None else f"{r['baseline']:.1f} / {r['isv']:.1f} / {r['sve']:.1f}"


def _mean_gains(rows: dict[str, BbqBlock]) -> str:
    parts = []
    for name, label in (("isv", "ISV"), ("sve", "SVE")):
        gs = [gain(r.steered[name]).value for r in rows.values() if name in r.steered]
        parts.append(f"{label} " + (f"{100 * sum(gs) / len(gs):+.1f} ({len(gs)} axes)" if gs else "not run"))
    return " / ".join(parts)


def _paper_table(results: Results) -> list[str]:
    rows = in_distribution(results)
    model = results.meta.model if results.meta is not None else "unknown model"
    scoring = results.meta.scoring if results.meta is not None else "unknown"
    lines = ["## BBQ accuracy (%), baseline / ISV / SVE, beside the paper", ""]
    lines += [
        f"Ours: {model}, test split, {scoring} scoring, 95% bootstrap intervals in brackets. The paper's columns are "
        f"**other models' published numbers** ({PAPER_TABLE['source']}; {PAPER_TABLE['metric']}): compare the "
        "direction and size of the gains, not the levels.",
        "",
    ]
    header = ["axis", "ours baseline", "ours ISV", "ours SVE"] + [f"paper: {m} (b / ISV / SVE)" for m in PAPER_MODELS]
    table = [
        [PAPER_AXIS_LABELS.get(a, a), *_our_row(rows.get(a)), *(_paper_cell(m, a) for m in PAPER_MODELS)]
        for a in ordered_axes(list(PAPER_AXES) + list(rows))
    ]
    lines += md_table(header, table)
    paper_g = [
        f"ISV {PAPER_TABLE['models'][m]['mean_gain']['isv']:+.1f} / SVE "
        f"{PAPER_TABLE['models'][m]['mean_gain']['sve']:+.1f}"
        for m in PAPER_MODELS
    ]
    return lines + [
        "",
        f"Mean gain over baseline (points): ours {_mean_gains(rows)}; paper "
        + "; ".join(f"{m} {g}" for m, g in zip(PAPER_MODELS, paper_g))
        + ".",
    ]


def gain_rows(target: str, block: BbqBlock) -> list[list[str]]:
    """One gains-table row per steered vector of `block`."""
    out = []
    for name, entry in block.steered.items():
        vb = entry.vs_base
        worst = worst_control(entry)
        unk_a, unk_d = vb.ambig.get("unknown_rate"), vb.disambig.get("unknown_rate")
        mc = vb.overall.mcnemar
        out.append(
            [
                target,
                VECTOR_LABELS.get(name, name),
                f"{entry.coeff}",
                fmt_ci(steered_acc(entry)),
                fmt_diff(gain(entry)),
                fmt_diff(Interval.of(vb.ambig.acc.diff)),
                fmt_diff(Interval.of(vb.disambig.acc.diff)),
                fmt_diff(Interval.of(unk_a.diff)) if unk_a else "-",
                fmt_diff(Interval.of(unk_d.diff)) if unk_d else "-",
                fmt_p(mc.p if mc else None),
                "no control" if worst is None else fmt_diff(worst),
                context_reading(vb),
            ]
        )
    return out


def _gains(results: Results) -> list[str]:
    rows = in_distribution(results)
    lines = ["## Gains split by context, beside matched random controls", ""]
    if not rows:
        return lines + ["Test-split evaluation of the steered models: not run."]
    lines += [
        'Gains in points, paired 95% bootstrap intervals. "vs control": the steered run minus a random vector with '
        "the same norms, layers and coefficient (the worst of the control seeds). A debiased model gains on ambiguous "
        'items without answering "unknown" more on disambiguated ones. The debiasing baselines (prompting, '
        "Self-Debias, fine-tuning) steer nothing, so they have no random control; their rows are paired against the "
        "same unsteered baseline.",
        "",
    ]
    return lines + md_table(GAIN_HEADER, [r for a in ordered_axes(list(rows)) for r in gain_rows(a, rows[a])])


def _ood(results: Results) -> list[str]:
    ood = results.ensemble.ood if results.ensemble is not None else {}
    lines = ["## Out of distribution (intersectional BBQ categories)", ""]
    if not ood:
        return lines + ["Out-of-distribution evaluation: not run."]
    table: list[list[str]] = []
    for cat, block in ood.items():
        if not isinstance(block, BbqBlock):
            lines.append(f"- {cat}: not run ({block.reason})")
            continue
        lines.append(
            f"- {cat}: baseline {fmt_ci(Interval.of(block.baseline['acc']))} (n={block.n}, source {block.source})"
        )
        table += gain_rows(cat, block)
    return lines + ([""] + md_table(GAIN_HEADER, table) if table else [])


def _mmlu(results: Results) -> list[str]:
    mm = results.ensemble.mmlu if results.ensemble is not None else None
    lines = ["## MMLU retention", ""]
    if mm is None:
        return lines + ["MMLU: not run."]
    lines += [
        f"Baseline {fmt_ci(Interval.of(mm.baseline))} (n={mm.n}, chance 25.0). Changes with the paired Agresti-Min "
        "95% interval from the discordant counts (results.json holds no paired bootstrap for MMLU).",
        "",
    ]
    table = []
    for name, e in mm.steered.items():
        ctrls = [c.diff for c in e.controls or () if c.diff is not None]
        ctrl = "-" if not ctrls else f"{100 * sum(ctrls) / len(ctrls):+.1f}"
        label = f"ISV ({name[4:]})" if name.startswith("isv:") else VECTOR_LABELS.get(name, name)
        table.append(
            [
                label,
                f"{e.coeff}",
                fmt_ci(Interval.of(e.acc)),
                fmt_diff(mmlu_change(mm, name)),
                fmt_p(e.mcnemar.p if e.mcnemar else None),
                ctrl,
                e.note or "",
            ]
        )
    return lines + md_table(
        ["method", "coeff", "acc", "change", "McNemar p", "random controls' mean change", "note"], table
    )


def sections(results: Results, claims: Sequence[Claim] | None = None) -> list[Section]:
    """The report's sections in reading order (the ground truth only on a bias model organism)."""
    judged = judge_claims(results) if claims is None else claims
    parts = [
        ("head", _head(results)),
        ("scope", scope_lines(results)),
        ("ground_truth", _ground_truth(results)),
        ("claims", _claims(judged)),
        ("capability", _capability(results)),
        ("paper_table", _paper_table(results)),
        ("v2_table", v2_table_lines(results)),
        ("gains", _gains(results)),
        ("steerability", steerability_lines(results)),
        ("ood", _ood(results)),
        ("mmlu", _mmlu(results)),
        ("run", _run(results)),
    ]
    return [Section(key, _join(lines)) for key, lines in parts if lines]


def results_markdown(results: Results) -> str:
    """results.md: every section, in reading order."""
    return "\n".join(s.markdown for s in sections(results))


__all__ = [
    "CLAIMS_HEADING",
    "GAIN_HEADER",
    "RUN_HEADING",
    "VECTOR_LABELS",
    "Section",
    "cell",
    "claims_rule",
    "gain_rows",
    "md_table",
    "results_markdown",
    "sections",
]
