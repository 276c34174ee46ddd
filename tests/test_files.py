"""Tests for lens_steer.files: a file appears whole or not at all, and JSON holds numpy and torch scalars as numbers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_steer.errors import LockHeldError
from lens_steer.files import (
    atomic_folder,
    atomic_write_text,
    file_lock,
    file_sha256,
    json_sha256,
    sha256_hex,
    write_json,
    write_jsonl,
)


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


# ---- the advisory file lock and the content hashes -------------------------------------------------------------
def _hold_lock_in_a_child(path: Path, note: str) -> subprocess.Popen:
    """A child process that takes `file_lock(path, note=note)`, says "held" and waits until killed."""
    code = (
        "import sys, time\n"
        "from lens_steer.files import file_lock\n"
        f"with file_lock({str(path)!r}, note={note!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_held_lock_is_refused_with_its_holder_and_freed_when_the_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    child = _hold_lock_in_a_child(path, "pid 42 on host")
    try:
        with pytest.raises(LockHeldError) as e:
            with file_lock(path, wait=False):
                pass
        assert e.value.holder == "pid 42 on host" and str(path) in str(e.value) and "\n" not in str(e.value)
    finally:
        child.kill()  # SIGKILL: no cleanup runs, the operating system drops the lock
        child.wait()
    with file_lock(path, wait=False, note="me") as held:  # not stale
        assert held == path and path.read_text() == "me"


def test_a_lock_excludes_a_second_open_in_the_same_process_until_released(tmp_path: Path) -> None:
    path = tmp_path / "y.lock"
    with file_lock(path):
        with pytest.raises(LockHeldError, match="another process"):  # nothing written into the file
            with file_lock(path, wait=False):
                pass
    with file_lock(path, wait=False):
        pass


def test_content_hashes_equal_hashlib_on_the_same_bytes(tmp_path: Path) -> None:
    import hashlib

    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_hex("é", 12) == hashlib.sha256("é".encode()).hexdigest()[:12]
    (tmp_path / "f").write_bytes(b"\x00\x01")
    assert file_sha256(tmp_path / "f", 16) == hashlib.sha256(b"\x00\x01").hexdigest()[:16]
    # sorted keys, compact defaults: the same object in another key order has the same hash
    assert json_sha256({"b": [1, 2], "a": "x"}) == hashlib.sha256(b'{"a": "x", "b": [1, 2]}').hexdigest()
    assert json_sha256({"a": "x", "b": [1, 2]}, 20) == json_sha256({"b": [1, 2], "a": "x"})[:20]
    assert json_sha256([Path("p")]) == hashlib.sha256(b'["p"]').hexdigest()  # a non-JSON value by its str
