"""Markdown building blocks shared by the report's sections: table cells, tables, and the methods' display names."""

from __future__ import annotations

from collections.abc import Sequence

VECTOR_LABELS: dict[str, str] = {
    "isv": "ISV",
    "sve": "SVE",
    "sve_norm": "SVE (norm-matched)",
    "sve_weighted": "SVE (coefficient-weighted)",
    "merged": "merged datasets",
    "sve_loo": "SVE without this axis",
    "prompting": "prompting (baseline)",
    "self-debias": "Self-Debias, the paper's (baseline)",
    "self-debias-schick": "Self-Debias, Schick et al. (baseline)",
    "finetune": "LoRA fine-tuning (baseline)",
}


def cell(text: object) -> str:
    """A table cell: the text on one line, with "|" (which would split the cell) written as "/"."""
    return " ".join(str(text).split()).replace("|", "/")


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]


__all__ = ["VECTOR_LABELS", "cell", "md_table"]
