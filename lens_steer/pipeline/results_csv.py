"""results.csv: one row per (axis, method) of the test stage, for spreadsheets."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

CSV_COLUMNS = (
    "eval",
    "target",
    "vector",
    "coeff",
    "control_seed",
    "n",
    "acc",
    "acc_ci_low",
    "acc_ci_high",
    "diff_vs_base",
    "diff_ci_low",
    "diff_ci_high",
    "mcnemar_p",
)


def results_csv(results: Mapping[str, Any]) -> str:
    """One row per (evaluation, target, vector, control seed) from `evaluate_ensembles` output."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def bbq_rows(kind: str, target: str, block: Mapping[str, Any]) -> None:
        b = block["baseline"]["acc"]
        w.writerow([kind, target, "baseline", 0.0, "", b["n"], b["value"], b["ci_low"], b["ci_high"], "", "", "", ""])
        for name, e in block["steered"].items():
            for seed, cmp in [(None, e["vs_base"])] + [(c["seed"], c["vs_base"]) for c in e["controls"]]:
                acc = cmp["overall"]["acc"]
                w.writerow(
                    [
                        kind,
                        target,
                        name if seed is None else f"{name}:control",
                        e["coeff"],
                        "" if seed is None else seed,
                        acc["steered"]["n"],
                        acc["steered"]["value"],
                        acc["steered"]["ci_low"],
                        acc["steered"]["ci_high"],
                        acc["diff"]["value"],
                        acc["diff"]["ci_low"],
                        acc["diff"]["ci_high"],
                        cmp["overall"]["mcnemar"]["p"],
                    ]
                )

    for axis, block in results["in_distribution"].items():
        bbq_rows("bbq_test", axis, block)
    for cat, block in results["ood"].items():
        if "skipped" not in block:
            bbq_rows("bbq_ood", cat, block)
    mm = results.get("mmlu")
    if mm:
        b = mm["baseline"]
        w.writerow(
            ["mmlu", "mmlu", "baseline", 0.0, "", mm["n"], b["value"], b["ci_low"], b["ci_high"], "", "", "", ""]
        )
        for name, e in mm["steered"].items():
            for seed, x in [(None, e)] + [(c["seed"], c) for c in e.get("controls", [])]:
                a = x["acc"]
                w.writerow(
                    [
                        "mmlu",
                        "mmlu",
                        name if seed is None else f"{name}:control",
                        e["coeff"],
                        "" if seed is None else seed,
                        mm["n"],
                        a["value"],
                        a["ci_low"],
                        a["ci_high"],
                        x["diff"],
                        "",
                        "",
                        x["mcnemar"]["p"],
                    ]
                )
    return buf.getvalue()
