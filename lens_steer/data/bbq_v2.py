"""The later SVE paper's exact BBQ splits (`bbq_v2_splits/`): per axis 300 contrastive train pairs (JSON)
and the official BBQ rows of validation (300) and test (600) as CSV, whose dict columns are Python literals.

Axes by the files' names: age, appearance, disability, gender, nationality, race, religion, socioeconomic
(no sexual orientation); lens_steer's axis names and aliases are accepted too.
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from typing import Any

from lens_steer.axes import AXES, get_axis
from lens_steer.data.bbq import BbqItem, attach_ambig_contexts, parse_bbq_row
from lens_steer.data.file_rows import numbered_rows
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.errors import DataError, LensSteerError

V2_DIR = "bbq_v2_splits"
V2_AXES: tuple[str, ...] = tuple(sorted(a.v2_name for a in AXES.values() if a.v2_name))  # the files' axis names
V2_SPLITS: tuple[str, ...] = ("train", "validation", "test")
_CSV_COLUMNS = (
    "example_id",
    "question_index",
    "question_polarity",
    "context_condition",
    "category",
    "answer_info",
    "additional_metadata",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
)


def v2_axis(name: str) -> str:
    """The v2 files' name of an axis (their own name, or any name `lens_steer.axes.get_axis` reads)."""
    try:
        axis = get_axis(name)
    except LensSteerError:
        raise DataError(f"unknown v2 axis {name!r}; choose one of {', '.join(V2_AXES)}") from None
    if axis.v2_name is None:
        raise DataError(
            f"axis {axis.name!r} has no v2 split (the later paper dropped it); choose one of {', '.join(V2_AXES)}"
        )
    return axis.v2_name


def v2_path(axis: str, split: str, data_root: str | Path | None = None) -> Path:
    """The file of one axis and split."""
    if split not in V2_SPLITS:
        raise DataError(f"unknown v2 split {split!r}; choose one of {', '.join(V2_SPLITS)}")
    ax = v2_axis(axis)
    rel = {
        "train": f"bbq_train/{ax}_train.json",
        "validation": f"bbq_validate/{ax}_validate.csv",
        "test": f"bbq_test/{ax}_test.csv",
    }[split]
    return require_file(resolve_data_root(data_root), f"{V2_DIR}/{rel}")


def load_v2_train_pairs(axis: str, data_root: str | Path | None = None) -> list[tuple[str, str]]:
    """The axis's 300 (positive, negative) texts, in file order."""
    path = v2_path(axis, "train", data_root)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"v2 train file {path} line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(
            f"v2 train file {path}: expected a non-empty JSON list of {{'positive': ..., 'negative': ...}} objects"
        )
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) and row[k].strip() for k in ("positive", "negative")
        ):
            raise DataError(f"v2 train file {path} entry {i}: expected non-empty 'positive' and 'negative' strings")
        out.append((row["positive"], row["negative"]))
    return out


def _literal(text: str, column: str, where: str) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"{where}: column {column!r} is not a Python literal ({text[:60]!r})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: column {column!r} must hold a dict (got {type(value).__name__})")
    return value


def _int(text: str, column: str, where: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: column {column!r} must be an integer (got {text!r})") from None


def load_v2_items(axis: str, split: str, data_root: str | Path | None = None) -> list[BbqItem]:
    """The validation or test rows of an axis as BbqItems (source "official"), validated like any BBQ row."""
    if split == "train":
        raise DataError("the v2 train split holds contrastive pairs, not BBQ rows; use load_v2_train_pairs")
    path = v2_path(axis, split, data_root)
    items: list[BbqItem] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"v2 file {path} line 1: missing column(s) {', '.join(missing)}")
        for line, row in numbered_rows(reader, f"v2 file {path}"):
            where = f"v2 file {path} line {line}"
            obj = {k: row[k] for k in _CSV_COLUMNS}
            obj["example_id"] = _int(row["example_id"], "example_id", where)
            obj["label"] = _int(row["label"], "label", where)
            obj["answer_info"] = _literal(row["answer_info"], "answer_info", where)
            obj["additional_metadata"] = _literal(row["additional_metadata"], "additional_metadata", where)
            items.append(parse_bbq_row(obj, file=str(path), line=line, source="official"))
    if not items:
        raise DataError(f"v2 file {path} holds no rows")
    return attach_ambig_contexts(items)
