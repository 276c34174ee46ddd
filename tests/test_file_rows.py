"""Tests for lens_steer.data.file_rows: CSV rows and JSONL objects with the line they start on, malformed input as
one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from lens_steer.data.file_rows import jsonl_objects, numbered_rows
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


def test_jsonl_objects_with_their_line_numbers():
    objs = [{"a": 1}, {"b": "x\u2028y"}, {"c": [1, 2]}]
    lines = [json.dumps(objs[0]), "", "  ", json.dumps(objs[1], ensure_ascii=False), json.dumps(objs[2])]
    data = "\ufeff".encode() + "\r\n".join(lines).encode("utf-8") + b"\r\n"
    got = list(jsonl_objects(data, "test file", fix="fix it"))
    # by hand: lines 2 and 3 are blank; the U+2028 inside line 4's string is no line end
    assert got == [(1, objs[0]), (4, objs[1]), (5, objs[2])]


@pytest.mark.parametrize(
    "second, expect",
    [
        (b'{"a": ', "line 2: invalid JSON ({msg} at column {col}); fix it"),
        (b"[1, 2]", "line 2: expected a JSON object (got list); fix it"),
        (b'{"a": "\xff"}', "line 2: not UTF-8 (byte 0xff at column 8); save the file as UTF-8"),
    ],
)
def test_jsonl_bad_line_names_file_and_line(second, expect):
    if "{msg}" in expect:  # the json module's own message for the same text
        with pytest.raises(json.JSONDecodeError) as raw:
            json.loads(second)
        expect = expect.format(msg=raw.value.msg, col=raw.value.colno)
    with pytest.raises(DataError) as e:
        list(jsonl_objects(b'{"ok": 1}\n' + second + b"\n", "BBQ file /x.jsonl", fix="fix it"))
    assert str(e.value) == f"BBQ file /x.jsonl {expect}"
