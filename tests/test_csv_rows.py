"""Tests for lens_steer.data.csv_rows: each row with the line it starts on, malformed CSV as a one-line error."""

from __future__ import annotations

import csv
import io

import pytest

from lens_steer.data.csv_rows import numbered_rows
from lens_steer.errors import DataError


def test_rows_carry_the_line_they_start_on():
    text = 'h1,h2\na,b\n"two\nlines",c\n\nd,e\n'
    got = list(numbered_rows(csv.reader(io.StringIO(text, newline="")), "test file"))
    # counted by hand: the header is line 1; the quoted field spans lines 3-4; line 5 is blank
    assert got == [(1, ["h1", "h2"]), (2, ["a", "b"]), (3, ["two\nlines", "c"]), (5, []), (6, ["d", "e"])]
    assert [row for _, row in got] == list(csv.reader(io.StringIO(text, newline="")))


def test_dict_reader_rows_after_the_header():
    text = "x,y\n1,2\n3,4\n"
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert reader.fieldnames == ["x", "y"]  # reads the header, as the loaders do before their rows
    got = list(numbered_rows(reader, "test file"))
    assert got == [(2, {"x": "1", "y": "2"}), (3, {"x": "3", "y": "4"})]


def test_malformed_row_names_file_and_line():
    text = 'a,b\nc,"d"e\n'
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    with pytest.raises(DataError) as e:
        list(numbered_rows(reader, "MMLU file /x.csv"))
    with pytest.raises(csv.Error) as raw:  # the csv module's own message, for the same row
        list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert str(e.value) == f"MMLU file /x.csv line 2: malformed CSV ({raw.value})"
    assert "\n" not in str(e.value)
