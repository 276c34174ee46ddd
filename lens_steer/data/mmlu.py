"""MMLU questions by subject from `mmlu/<split>/<subject>_<split>.csv` (header question,choice0..3,answer)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lens_steer.data.file_rows import numbered_rows
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.errors import DataError
from lens_steer.specs import parse_names

MMLU_SPLITS: tuple[str, ...] = ("test", "dev")
MMLU_HEADER: tuple[str, ...] = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


@dataclass(frozen=True)
class MmluItem:
    """One four-way multiple-choice question; `index` is its row within the subject's file (0-based)."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    label: int
    index: int


def _check_split(split: str) -> str:
    if split not in MMLU_SPLITS:
        raise DataError(f"unknown MMLU split {split!r}; choose one of {', '.join(MMLU_SPLITS)}")
    return split


def mmlu_subjects(data_root: str | Path | None = None, split: str = "test") -> list[str]:
    """Sorted subject names that have a file in `mmlu/<split>/`."""
    root = resolve_data_root(data_root)
    folder = root / "mmlu" / _check_split(split)
    if not folder.is_dir():
        raise DataError(
            f"missing MMLU folder mmlu/{split}: looked for {folder} under data root {root}; point --data-dir or "
            "$LENS_STEER_DATA at the shared data"
        )
    suffix = f"_{split}.csv"
    subjects = sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))
    if not subjects:
        raise DataError(f"MMLU folder {folder} holds no *{suffix} files")
    return subjects


def load_mmlu_file(path: str | Path, subject: str) -> list[MmluItem]:
    """Every row of one MMLU CSV, validated."""
    path = Path(path)
    items: list[MmluItem] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != MMLU_HEADER:
            raise DataError(f"MMLU file {path} line 1: header must be {','.join(MMLU_HEADER)} (got {header})")
        for line, row in numbered_rows(reader, f"MMLU file {path}"):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 6:
                raise DataError(f"MMLU file {path} line {line}: expected 6 columns (got {len(row)})")
            if not row[0].strip():
                raise DataError(f"MMLU file {path} line {line}: empty question")
            try:
                label = int(row[5])
            except ValueError:
                label = -1
            if label not in (0, 1, 2, 3):
                raise DataError(f"MMLU file {path} line {line}: field 'answer' must be 0, 1, 2 or 3 (got {row[5]!r})")
            items.append(MmluItem(subject, row[0], (row[1], row[2], row[3], row[4]), label, len(items)))
    if not items:
        raise DataError(f"MMLU file {path} holds no questions")
    return items


def load_mmlu(
    split: str = "test", subjects: Sequence[str] | str | None = None, data_root: str | Path | None = None
) -> list[MmluItem]:
    """MMLU items of `split` ("test" or "dev") for the given subjects (all if None), subject by subject."""
    _check_split(split)
    root = resolve_data_root(data_root)
    known = mmlu_subjects(root, split)
    chosen = known if subjects is None else parse_names(subjects, "MMLU subject", known, error=DataError)
    items: list[MmluItem] = []
    for s in chosen:
        items += load_mmlu_file(require_file(root, f"mmlu/{split}/{s}_{split}.csv"), s)
    return items
