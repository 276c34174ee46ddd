"""Tests for lens_steer.files: a file appears whole or not at all, and JSON holds numpy and torch scalars as numbers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_steer.files import atomic_folder, atomic_write_text, write_json, write_jsonl


class _Unwritable:
    """Not JSON: serialising it fails after the file was opened for writing."""


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": _Unwritable()})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_values_numbers_and_permissions(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "sub" / "x.json",
        {"f": np.float32(0.5), "i": torch.tensor(3), "t": (1, 2), "p": tmp_path, "arr": np.arange(3)},
    )
    assert json.loads(path.read_text()) == {"f": 0.5, "i": 3, "t": [1, 2], "p": str(tmp_path), "arr": [0, 1, 2]}
    rows = [{"k": i} for i in range(3)]
    assert [json.loads(x) for x in write_jsonl(tmp_path / "r.jsonl", rows).read_text().splitlines()] == rows
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(atomic_write_text(tmp_path / "t.txt", "hi").stat().st_mode)
    assert mode == 0o666 & ~umask  # a new file's usual permissions, not mkstemp's 0600


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_atomic_folder_appears_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()  # filled beside the target, not in it
        (tmp / "a.txt").write_text("one")
    assert _tree(target) == {"a.txt": "one"}
    with atomic_folder(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("two")
        assert _tree(target) == {"a.txt": "one"}  # the old folder stays until the new one is complete
    assert _tree(target) == {"sub/b.txt": "two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left


def test_a_failed_atomic_folder_leaves_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("half-way")
    assert _tree(target) == {"a.txt": "one"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "new") as tmp:
            raise RuntimeError("before anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # a failed first write leaves nothing


def test_atomic_folder_keep_existing_keeps_the_first_writers_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_folder(target, keep_existing=True) as tmp:
        (tmp / "a.txt").write_text("mine")
        with atomic_folder(target, keep_existing=True) as other:  # another writer finishes first
            (other / "a.txt").write_text("theirs")
    assert _tree(target) == {"a.txt": "theirs"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
