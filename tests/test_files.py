"""Tests for lens_steer.files: a file appears whole or not at all, and JSON holds numpy and torch scalars as numbers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_steer.files import atomic_write_text, write_json, write_jsonl


class _Unwritable:
    """Not JSON: serialising it fails after the file was opened for writing."""


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": _Unwritable()})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_values_numbers_and_permissions(tmp_path: Path) -> None:
    path = write_json(tmp_path / "sub" / "x.json", {"f": np.float32(0.5), "i": torch.tensor(3), "t": (1, 2), "p": tmp_path, "arr": np.arange(3)})
    assert json.loads(path.read_text()) == {"f": 0.5, "i": 3, "t": [1, 2], "p": str(tmp_path), "arr": [0, 1, 2]}
    rows = [{"k": i} for i in range(3)]
    assert [json.loads(x) for x in write_jsonl(tmp_path / "r.jsonl", rows).read_text().splitlines()] == rows
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(atomic_write_text(tmp_path / "t.txt", "hi").stat().st_mode)
    assert mode == 0o666 & ~umask  # a new file's usual permissions, not mkstemp's 0600
