"""The report's per-method tables beyond the paper's own: per-item steerability of every result (Tan et al. 2024) with
the steerability-bias check, and the later paper's v2 table (method.md §8) beside ours when its protocol or splits
ran."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lens_steer.pipeline.results import Results
from lens_steer.pipeline.results_entries import BbqBlock, Steerability, Steered
from lens_steer.report.claims import in_distribution, ordered_axes, steered_acc
from lens_steer.report.tables import VECTOR_LABELS, md_table
from lens_steer.report.verdicts import Interval, fmt_ci, pct

STEER_HEADER = [
    "target",
    "method",
    "n",
    "wrong-way share",
    "wrong-way ambig",
    "wrong-way disambig",
    "mean margin change",
    "bias check (disambiguated)",
]
V2_METHODS: tuple[tuple[str, str | None], ...] = (
    ("baseline", None),
    ("prompting", "prompting"),
    ("self-debias", "self-debias"),
    ("finetune", "finetune"),
    ("steering", "isv"),
    ("ensemble", "sve"),
)


def steered_blocks(results: Results) -> list[tuple[str, BbqBlock]]:
    """(target, block) of every BBQ test result: the axes in paper order, then the out-of-distribution categories."""
    rows = in_distribution(results)
    blocks = [(a, rows[a]) for a in ordered_axes(list(rows))]
    if results.ensemble is not None:
        blocks += [(f"{c} (OOD)", b) for c, b in results.ensemble.ood.items() if isinstance(b, BbqBlock)]
    return blocks


def steerability_entries(results: Results) -> list[tuple[str, str, Steerability]]:
    """(target, method, steerability) of every result that has one."""
    return [
        (t, name, e.steerability)
        for t, block in steered_blocks(results)
        for name, e in block.steered.items()
        if e.steerability is not None
    ]


def _share(m: Any) -> str:
    return fmt_ci(Interval.of(m))


def bias_check(bias: Mapping[str, Any]) -> str:
    """The steerability-bias check in a few words: which answer positions or "unknown" the method favours whatever the
    item."""
    if not bias.get("n"):
        return "no disambiguated items"
    unk = bias["unknown_shift"]
    favoured = bias.get("favoured_positions") or []
    parts = [
        f"favours position {', '.join(map(str, favoured))}" if favoured else "no position favoured",
        f'{"favours" if bias.get("favours_unknown") else "does not favour"} "unknown" (shift {unk["value"]:+.2f} '
        f"[{unk['ci_low']:+.2f}, {unk['ci_high']:+.2f}])",
    ]
    return "; ".join(parts) + f" (n={bias['n']})"


def steerability_lines(results: Results) -> list[str]:
    """The per-item steerability section as Markdown lines (empty when no result carries one)."""
    entries = steerability_entries(results)
    if not entries:
        return []
    lines = [
        "## Per-item steerability",
        "",
        "For every item, the margin log p(correct answer) - max log p(other answers) over the answers' normalised "
        "log-probabilities, with the method minus without it. *Wrong-way share*: the share of items whose margin fell "
        "(95% bootstrap interval over items). Bias check, on disambiguated items (where the right answer is never "
        '"unknown"): does the method raise one answer position, or the "unknown" option, against the other options '
        "whatever the item (flagged when that shift's interval lies above 0)? Per-item margins: "
        "`ensemble/steerability/<target>.<method>.jsonl`; report.html draws their histograms.",
        "",
    ]
    table = []
    for target, name, st in entries:
        cond = st.wrong_way_share_by_condition
        mc = st.mean_change
        table.append(
            [
                target,
                VECTOR_LABELS.get(name, name),
                st.n,
                _share(st.wrong_way_share),
                _share(cond["ambig"]) if "ambig" in cond else "-",
                _share(cond["disambig"]) if "disambig" in cond else "-",
                f"{mc.value:+.3f} [{mc.ci_low:+.3f}, {mc.ci_high:+.3f}]",
                bias_check(st.bias),
            ]
        )
    return lines + md_table(STEER_HEADER, table) + slope_lines(results)


def slope_rows(results: Results) -> list[list[str]]:
    """(method, axis, coefficients, items, mean slope, anti-steerable share) of every validation coefficient sweep with
    slopes."""
    from lens_steer.pipeline.json_read import metric

    if results.ensemble is None:
        return []
    rows = []
    for name, sweep in results.ensemble.sweeps.items():
        for axis, sl in (sweep.get("slopes") or {}).items() if isinstance(sweep, Mapping) else ():
            where = f"ensemble.sweeps.{name}.slopes.{axis}"
            mean, share = (
                metric(sl.get("mean"), f"{where}.mean"),
                metric(sl.get("anti_steerable_share"), f"{where}.anti_steerable_share"),
            )
            rows.append(
                [
                    VECTOR_LABELS.get(name, name),
                    axis,
                    ", ".join(f"{c:g}" for c in sl.get("coeffs", [])),
                    mean.n,
                    f"{mean.value:+.3f} [{mean.ci_low:+.3f}, {mean.ci_high:+.3f}]",
                    _share(share),
                ]
            )
    return rows


def slope_lines(results: Results) -> list[str]:
    """The slopes over the validation coefficient sweeps as Markdown lines (empty without any)."""
    rows = slope_rows(results)
    if not rows:
        return []
    return [
        "",
        "Per-item slopes over each ensemble's validation coefficient sweep (least squares of each item's margin on the "
        "coefficient): *anti-steerable* items have a negative slope, moved the wrong way the harder the vector pushes.",
        "",
        *md_table(["method", "axis (validation)", "coefficients", "items", "mean slope", "anti-steerable share"], rows),
    ]


def _acc(entry: Steered | None) -> float | None:
    a = steered_acc(entry)
    return None if a is None else a.value


def _mean(values: Sequence[float | None]) -> str:
    vs = [v for v in values if v is not None]
    return "-" if not vs else f"{100 * sum(vs) / len(vs):.1f} ({len(vs)})"


def _paper(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def v2_table_lines(results: Results) -> list[str]:
    """The later paper's v2 table (per axis, and the means over methods) beside ours, when this run used its protocol or
    splits."""
    meta = results.meta
    if meta is None or (meta.protocol != "v2" and meta.splits != "v2"):
        return []
    from lens_steer.data.bbq_v2 import V2_AXES, v2_axis
    from lens_steer.errors import LensSteerError
    from lens_steer.methods.protocol_v2 import V2_PAPER_BBQ, V2_PAPER_MEANS

    rows = in_distribution(results)
    ours: dict[str, str] = {}
    for axis in rows:
        try:
            ours[v2_axis(axis)] = axis
        except LensSteerError:
            continue
    lines = [
        "## The later paper's v2 table beside ours",
        "",
        f"Protocol {meta.protocol}, splits {meta.splits}. BBQ test accuracy (%). The paper's columns are "
        "Mistral-7B-Instruct-v0.1 (method.md §8; 32 layers, its own scoring): compare directions and sizes, not "
        "levels. Ours: steering is the per-axis vector, ensemble the SVE; intervals in brackets.",
        "",
    ]
    header = [
        "axis",
        "paper baseline",
        "paper prompting",
        "paper steering",
        "paper layer / coeff",
        "ours baseline",
        "ours prompting",
        "ours steering",
        "ours layer / coeff",
        "ours ensemble",
    ]
    table = []
    for ax in V2_AXES:
        p = V2_PAPER_BBQ[ax]
        block = rows.get(ours.get(ax, ""))
        isv = results.isv.get(ours.get(ax, "")) if results.isv else None
        if isv is not None and (isv.params is None or isv.coeff is None):
            isv = None  # no additive trial finished: no ISV to place beside the paper's
        choice = (
            f"{isv.params.get('layer')} / {isv.coeff:+.1f}"
            if isv is not None and "layer" in isv.params
            else ("-" if isv is None else f"{isv.params.get('layers')} / {isv.coeff:+.1f}")
        )
        if block is None:
            cells = ["not run"] * 3 + [choice, "not run"]
        else:
            cells = [
                fmt_ci(Interval.of(block.baseline["acc"])),
                fmt_ci(steered_acc(block.steered.get("prompting"))),
                fmt_ci(steered_acc(block.steered.get("isv"))),
                choice,
                fmt_ci(steered_acc(block.steered.get("sve"))),
            ]
        table.append(
            [
                ax,
                _paper(p["baseline"]),
                _paper(p["prompting"]),
                _paper(p["steering"]),
                f"{p['layer']} / {p['coeff']:+.1f}",
                *cells,
            ]
        )
    lines += md_table(header, table)
    mm = results.ensemble.mmlu if results.ensemble is not None else None
    means = []
    for label, key in V2_METHODS:
        bbq = [rows[a].baseline["acc"].value if key is None else _acc(rows[a].steered.get(key)) for a in ours.values()]
        if mm is None:
            mmlu = "not run"
        elif key is None:
            mmlu = pct(mm.baseline.value)
        elif key == "isv":
            mmlu = _mean([e.acc.value for n, e in mm.steered.items() if n.startswith("isv:")])
        else:
            mmlu = pct(mm.steered[key].acc.value) if key in mm.steered else "-"
        paper = V2_PAPER_MEANS[label]
        means.append([label, _paper(paper["bbq"]), _mean(bbq), _paper(paper["mmlu"]), mmlu])
    lines += [
        "",
        "Means over axes (ours: number of axes in brackets; MMLU for steering: the mean over the per-axis vectors):",
        "",
    ]
    return lines + md_table(["method", "paper BBQ", "ours BBQ", "paper MMLU", "ours MMLU"], means)


__all__ = [
    "STEER_HEADER",
    "bias_check",
    "slope_lines",
    "slope_rows",
    "steerability_entries",
    "steerability_lines",
    "steered_blocks",
    "v2_table_lines",
]
