"""CrowS-Pairs sentence pairs from `crows_pairs/crows_pairs_anonymized.csv`.

`sent_more` is the sentence that is more stereotyping (for "antistereo" pairs it is still the one the
dataset marks as sent_more), so the bias metric is the share of pairs where sent_more is more likely.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lens_steer.axes import AXES, get_axis
from lens_steer.data.file_rows import numbered_rows
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.errors import DataError, LensSteerError
from lens_steer.specs import parse_names

CROWS_FILE = "crows_pairs/crows_pairs_anonymized.csv"
CROWS_BIAS_TYPES: tuple[str, ...] = tuple(
    sorted(t for a in AXES.values() if (t := a.crows_bias_type))
)  # lens_steer.axes
CROWS_DIRECTIONS: tuple[str, ...] = ("stereo", "antistereo")
_REQUIRED = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


@dataclass(frozen=True)
class CrowsPair:
    """One minimal pair: the more and the less stereotyping sentence."""

    index: int
    sent_more: str
    sent_less: str
    stereo_antistereo: str
    bias_type: str


def load_crows_file(path: str | Path) -> list[CrowsPair]:
    """Every pair in a CrowS-Pairs CSV, validated."""
    path = Path(path)
    pairs: list[CrowsPair] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        missing = [c for c in _REQUIRED if c not in fields]
        if missing:
            raise DataError(f"CrowS-Pairs file {path} line 1: missing column(s) {', '.join(missing)} (header {fields})")
        for line, row in numbered_rows(reader, f"CrowS-Pairs file {path}"):
            where = f"CrowS-Pairs file {path} line {line}"
            raw_idx = (row.get("") or "").strip()
            try:
                index = int(raw_idx) if raw_idx else len(pairs)
            except ValueError:
                raise DataError(f"{where}: index column must be an integer (got {raw_idx!r})") from None
            for col in ("sent_more", "sent_less"):
                if not (row.get(col) or "").strip():
                    raise DataError(f"{where}: empty {col}")
            direction = (row.get("stereo_antistereo") or "").strip()
            if direction not in CROWS_DIRECTIONS:
                raise DataError(f"{where}: stereo_antistereo must be stereo or antistereo (got {direction!r})")
            bias = (row.get("bias_type") or "").strip()
            if bias not in CROWS_BIAS_TYPES:
                raise DataError(f"{where}: bias_type must be one of {', '.join(CROWS_BIAS_TYPES)} (got {bias!r})")
            pairs.append(CrowsPair(index, row["sent_more"], row["sent_less"], direction, bias))
    if not pairs:
        raise DataError(f"CrowS-Pairs file {path} holds no pairs")
    return pairs


def crows_bias_type(name: str) -> str:
    """A CrowS-Pairs bias type by its name ('_' and ' ' read as '-', any case) or by any name of its axis
    (`lens_steer.axes.get_axis`: "ses", "race", "Gender_identity", ...)."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key in CROWS_BIAS_TYPES:
        return key
    try:
        found = get_axis(name).crows_bias_type
    except LensSteerError:
        found = None
    if found is None:
        raise DataError(
            f"unknown CrowS-Pairs bias type {name!r}; choose one of {', '.join(CROWS_BIAS_TYPES)} or an axis"
        )
    return found


def load_crows(bias_types: Sequence[str] | str | None = None, data_root: str | Path | None = None) -> list[CrowsPair]:
    """CrowS-Pairs pairs, optionally only those of the given bias types (any `crows_bias_type` reads), in file order."""
    pairs = load_crows_file(require_file(resolve_data_root(data_root), CROWS_FILE))
    if bias_types is None:
        return pairs
    wanted = parse_names(
        bias_types, "CrowS-Pairs bias type", CROWS_BIAS_TYPES, resolve=crows_bias_type, error=DataError
    )
    return [p for p in pairs if p.bias_type in wanted]
