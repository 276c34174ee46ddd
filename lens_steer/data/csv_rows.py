"""Reading the data's CSV files row by row, each row with the line it starts on."""

from __future__ import annotations

import csv
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
