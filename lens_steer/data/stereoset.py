"""StereoSet items (dev split, one JSON object a line) from `stereoset/test.jsonl`.

Each item has a context and three candidates: the stereotype, the anti-stereotype and an unrelated
sentence. Intersentence items continue the context with a sentence; intrasentence items have a
context template holding the word `BLANK` and each candidate is the whole filled-in sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lens_steer.data.file_rows import jsonl_objects
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.errors import DataError
from lens_steer.specs import parse_names

STEREOSET_FILE = "stereoset/test.jsonl"
STEREOSET_TYPES: tuple[str, ...] = ("intersentence", "intrasentence")
STEREOSET_BIAS_TYPES: tuple[str, ...] = ("gender", "profession", "race", "religion")
PAPER_BIAS_TYPES: tuple[str, ...] = ("gender", "race", "religion")  # the later SVE paper's selection
CANDIDATES: tuple[str, ...] = ("stereotype", "anti-stereotype", "unrelated")
BLANK = "BLANK"


@dataclass(frozen=True)
class StereoSetItem:
    """One StereoSet context with its three candidate sentences; `index` is its 0-based position in the file."""

    index: int
    type: str
    target: str
    bias_type: str
    context: str
    stereotype: str
    anti_stereotype: str
    unrelated: str

    @property
    def candidates(self) -> tuple[str, str, str]:
        """(stereotype, anti-stereotype, unrelated), the order of CANDIDATES."""
        return (self.stereotype, self.anti_stereotype, self.unrelated)


def _field(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DataError(f"{where}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string (got {value!r})")
    return value


def load_stereoset_file(path: str | Path) -> list[StereoSetItem]:
    """Every item of a StereoSet JSONL file, validated (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"StereoSet file {path} not found")
    items: list[StereoSetItem] = []
    for lineno, row in jsonl_objects(path.read_bytes(), f"StereoSet file {path}", fix="fix or re-download the file"):
        where = f"StereoSet file {path} line {lineno}"
        kind = _field(row, "type", where)
        if kind not in STEREOSET_TYPES:
            raise DataError(f"{where}: field 'type' must be one of {', '.join(STEREOSET_TYPES)} (got {kind!r})")
        bias = _field(row, "bias_type", where)
        if bias not in STEREOSET_BIAS_TYPES:
            raise DataError(
                f"{where}: field 'bias_type' must be one of {', '.join(STEREOSET_BIAS_TYPES)} (got {bias!r})"
            )
        context = _field(row, "context", where)
        if kind == "intrasentence" and BLANK not in context:
            raise DataError(f"{where}: an intrasentence context must hold the word {BLANK} (got {context!r})")
        stereo, anti, unrelated = (_field(row, key, where) for key in CANDIDATES)
        if len({stereo, anti, unrelated}) < 3:
            raise DataError(f"{where}: the three candidate sentences must differ")
        items.append(
            StereoSetItem(len(items), kind, _field(row, "target", where), bias, context, stereo, anti, unrelated)
        )
    if not items:
        raise DataError(f"StereoSet file {path} holds no items")
    return items


def _selection(values: Sequence[str] | str | None, valid: Sequence[str], what: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    return parse_names(values, f"StereoSet {what}", valid, resolve=str.lower, error=DataError)


def load_stereoset(
    bias_types: Sequence[str] | str | None = None,
    *,
    types: Sequence[str] | str | None = None,
    data_root: str | Path | None = None,
) -> list[StereoSetItem]:
    """StereoSet items of the given bias types and types (default all), in file order."""
    b = _selection(bias_types, STEREOSET_BIAS_TYPES, "bias type")
    t = _selection(types, STEREOSET_TYPES, "type")
    items = load_stereoset_file(require_file(resolve_data_root(data_root), STEREOSET_FILE))
    return [it for it in items if (b is None or it.bias_type in b) and (t is None or it.type in t)]
