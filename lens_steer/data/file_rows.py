"""Reading data files row by row: CSV rows and JSONL objects, each with the line it starts on; a malformed
row is a one-line DataError naming the file and the line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, Protocol

from lens_steer.errors import DataError


class CsvReader(Protocol):
    """What `csv.reader` and `csv.DictReader` both are: an iterator of rows that counts the lines it read."""

    line_num: int

    def __next__(self) -> Any: ...


def numbered_rows(reader: CsvReader, file: str) -> Iterator[tuple[int, Any]]:
    """(line a row starts on, row) of every row `reader` yields; a malformed row raises a one-line DataError
    naming `file` (e.g. "MMLU file /x.csv") and the line. A `csv.DictReader` counts its header once its
    `fieldnames` were read."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{file} line {line}: malformed CSV ({e})") from None
        yield line, row


def jsonl_objects(data: bytes, file: str, *, fix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line of JSONL `data`. Lines end at b"\\n" only (a line's own
    U+2028 is no line end); a UTF-8 BOM on line 1 and CRLF line ends are accepted. A line that is not UTF-8,
    not JSON or not a JSON object raises a one-line DataError naming `file` (e.g. "BBQ file /x.jsonl") and
    the line; `fix` ends the JSON errors (what a line must hold, or "fix or re-download the file")."""
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{file} line {n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the file as "
                "UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{file} line {n}: invalid JSON ({e.msg} at column {e.colno}); {fix}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{file} line {n}: expected a JSON object (got {type(obj).__name__}); {fix}")
        yield n, obj
