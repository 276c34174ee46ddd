"""The report's ground-truth section: which planted bias the organism carries, which method removed it and at what
cost to reading, the class x planted-axis table, every axis in detail, the rules (printed from their data) and
what each axis's search chose."""

from __future__ import annotations

from collections.abc import Sequence

from lens_steer.pipeline.ground_truth import METHOD_BY_NAME, AxisTruth, Cell, GroundTruth, Rule
from lens_steer.stats import Metric


def _pts(m: Metric) -> str:
    return f"{100 * m.value:+.1f} [{100 * m.ci_low:+.1f}, {100 * m.ci_high:+.1f}]"


def _score(m: Metric) -> str:
    return f"{m.value:+.2f} [{m.ci_low:+.2f}, {m.ci_high:+.2f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def short_cell(c: Cell) -> str:
    """verdict, ambiguous accuracy, S_AMB, disambiguated change."""
    n = c.numbers
    if "acc_ambig" not in n:
        return c.verdict
    dis = c.intervals.get("acc_disambig.diff")
    return (
        f"**{c.verdict}**: amb {100 * (n['acc_ambig'] or 0):.0f}%, S_AMB {n.get('bias_ambig', 0) or 0:+.2f}, "
        f"dis {_pts(dis) if dis is not None else 'n/a'}"
    )


def _rule_lines(rules: dict[str, dict[str, list[dict]]]) -> list[str]:
    out = []
    for name, groups in rules.items():
        parts = []
        if groups.get("any"):
            parts.append("at least one of: " + "; ".join(Rule(**r).says for r in groups["any"]))
        if groups.get("all"):
            parts.append(
                "all of: "
                + "; ".join(
                    Rule(**r).says + (" (methods with a random control)" if r["control"] else "") for r in groups["all"]
                )
            )
        out.append(f"- *{name}*: " + "; and ".join(parts))
    return out


def headline(gt: GroundTruth) -> list[str]:
    """What the organism carries and which method removed it, per planted axis, in a few lines."""
    lines = []
    for a in gt.planted:
        b = a.baseline
        removed = [METHOD_BY_NAME[m].label for m, c in a.cells.items() if c.verdict == "removed"]
        chosen = a.cells.get("chosen")
        pick = (
            f"the search chose {a.chosen_kind} ({chosen.verdict})"
            if chosen is not None
            else "the search chose nothing (no trial beat the unsteered organism on validation)"
        )
        lines.append(
            f"- **{a.axis}** (planted): unsteered ambiguous accuracy {100 * b['acc_ambig'].value:.0f}%, S_AMB "
            f"{b['bias_ambig'].value:+.2f}, disambiguated {100 * b['acc_disambig'].value:.0f}%; {pick}; "
            f"removed by: {', '.join(removed) if removed else 'no method'}."
        )
    return lines


def class_table(gt: GroundTruth) -> list[str]:
    """Rows: methods; columns: each planted axis's cell, clean axes harmed, the largest MMLU change, the target."""
    header = ["method", *(a.axis for a in gt.planted), "clean axes harmed", "MMLU change", "target met"]
    rows = []
    for m in gt.methods():
        s = gt.summary(m)
        cells = [short_cell(a.cells[m]) if m in a.cells else "not run" for a in gt.planted]
        harmed = f"{len(s['harmed'])} of {s['clean_judged']}" + (f" ({', '.join(s['harmed'])})" if s["harmed"] else "")
        mmlu = f"{100 * s['mmlu_diff']:+.1f}" if s["mmlu_diff"] is not None else "n/a"
        rows.append([METHOD_BY_NAME[m].label, *cells, harmed, mmlu, "**yes**" if s["target_met"] else "no"])
    return _table(header, rows)


def axis_table(a: AxisTruth) -> list[str]:
    """One axis: the unsteered organism, then every method with its intervals and its control."""
    header = [
        "method",
        "verdict",
        "acc ambig (change)",
        "acc disambig (change)",
        "S_AMB (change)",
        "S_DIS (change)",
        "steered vs control, acc ambig",
        "MMLU change",
    ]
    b = a.baseline
    rows = [
        [
            "unsteered",
            "",
            f"{100 * b['acc_ambig'].value:.1f}",
            f"{100 * b['acc_disambig'].value:.1f}",
            f"{b['bias_ambig'].value:+.2f}",
            f"{b['bias_disambig'].value:+.2f}",
            "",
            "",
        ]
    ]
    for m in [x for x in METHOD_BY_NAME if x in a.cells]:
        c, iv = a.cells[m], a.cells[m].intervals

        def both(key: str, pts: bool = True) -> str:
            if key not in iv:
                return "n/a"
            s, d = iv[key], iv[f"{key}.diff"]
            return f"{100 * s.value:.1f} ({_pts(d)})" if pts else f"{s.value:+.2f} ({_score(d)})"

        ctrl = _pts(iv["control.acc_ambig"]) if "control.acc_ambig" in iv else "no control"
        mmlu = f"{100 * c.mmlu_diff:+.1f}" if c.mmlu_diff is not None else "n/a"
        rows.append(
            [
                METHOD_BY_NAME[m].label,
                c.verdict,
                both("acc_ambig"),
                both("acc_disambig"),
                both("bias_ambig", False),
                both("bias_disambig", False),
                ctrl,
                mmlu,
            ]
        )
    return _table(header, rows)


def markdown(gt: GroundTruth) -> list[str]:
    """The report's ground-truth section as Markdown lines."""
    org = gt.organism
    lines = [
        "## Ground truth: the bias model organism",
        "",
        f"The model is `{org.get('name')}`, fine-tuned so that the ambiguous items of "
        f"**{', '.join(org.get('plant', []))}** get the stereotyped answer (planted) while "
        f'{", ".join(org.get("clean", []))} answer "unknown" (clean) and every axis reads disambiguating contexts. A '
        'method that removes the planted bias makes the planted axes answer "unknown" where the context is ambiguous '
        "and keeps the reading.",
        "",
        *headline(gt),
        "",
        "### Which method removed the planted bias",
        "",
        "Each cell: the verdict, the steered ambiguous accuracy and S_AMB, and the change of disambiguated accuracy "
        "with its paired 95% interval (points). Target: " + gt.rules.get("target", "") + ".",
        "",
        *class_table(gt),
        "",
        "### The rules",
        "",
        "Planted axes:",
        *_rule_lines(gt.rules["planted"]),
        f"- otherwise *{gt.rules['planted_default']}*.",
        "",
        "Clean axes:",
        *_rule_lines(gt.rules["clean"]),
        f"- otherwise *{gt.rules['clean_default']}*.",
        "",
        "### What each axis's search chose",
        "",
        *(f"- {a.axis} ({'planted' if a.planted else 'clean'}): {a.search_choice}" for a in gt.axes.values()),
        "",
        "### Every axis",
        "",
    ]
    for a in gt.axes.values():
        lines += [f"**{a.axis}** ({'planted' if a.planted else 'clean'}, {a.n} test items)", "", *axis_table(a), ""]
    return lines


__all__ = ["axis_table", "class_table", "headline", "markdown", "short_cell"]
