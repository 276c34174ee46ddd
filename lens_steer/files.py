"""Files: atomic output (a file or a folder appears whole or not at all), the advisory file lock, content hashes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lens_steer.errors import LockHeldError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(target: str | Path, *, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside `target` to fill; when the block ends normally it takes `target`'s place
    (an existing `target` is moved aside, then removed), when it raises it is removed and `target` is untouched.

    With `keep_existing`, a non-empty `target` already there when the block ends (another process wrote the same
    content first) is kept and the new folder discarded."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _swap_in(tmp, target, keep_existing=keep_existing)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, target: Path, *, keep_existing: bool) -> None:
    """Rename `tmp` to `target`; an existing `target` is kept (`keep_existing`) or replaced."""
    try:
        os.replace(tmp, target)  # atomic when `target` is absent (or an empty folder)
        return
    except OSError:
        if not target.is_dir():
            raise
        if keep_existing:
            return
    old = tmp.with_name(tmp.name + ".old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write one JSON object per line atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:  # numpy arrays, tensors
        return obj.tolist()
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True, note: str | None = None) -> Iterator[Path]:
    """Hold an advisory `flock` on `path` (created, with its folder, if absent) for the block. The operating system
    releases it when the holder exits, SIGKILL included, so a lock is never stale. `wait=False`: raise
    `LockHeldError` at once (with what the holder wrote) when another open of the file holds it. `note` (e.g. who
    holds it) is written into the file once the lock is held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            if wait:
                raise
            raise LockHeldError(path, os.pread(fd, 200, 0).decode("utf-8", "replace").strip()) from None
        if note is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def sha256_hex(data: bytes | str, length: int | None = None) -> str:
    """The SHA-256 of `data` (text as UTF-8) in hex, cut to its first `length` characters (None: all 64)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()[:length]


def file_sha256(path: str | Path, length: int | None = None) -> str:
    """`sha256_hex` of a file's bytes."""
    return sha256_hex(Path(path).read_bytes(), length)


def json_sha256(obj: Any, length: int | None = None) -> str:
    """`sha256_hex` of `obj` as JSON with sorted keys (a value JSON cannot hold as its `str`): a content key."""
    return sha256_hex(json.dumps(obj, sort_keys=True, default=str), length)
