"""Where the evaluation data lives: the data root and the files under it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lens_steer.errors import DataError
from lens_steer.files import file_sha256

ENV_VAR = "LENS_STEER_DATA"


def default_data_root() -> Path:
    """`<repo>/../shared/data`, where the repo is the folder holding the `lens_steer` package."""
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data"


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: `explicit` (e.g. `--data-dir`), else $LENS_STEER_DATA, else `<repo>/../shared/data`."""
    if explicit is not None and str(explicit) != "":
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data root {root} (from --data-dir) is not a folder; pass --data-dir DIR pointing at the shared data "
                "folder"
            )
        return root
    env = os.environ.get(ENV_VAR, "")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(
                f"data root {root} (from ${ENV_VAR}) is not a folder; set {ENV_VAR}=DIR or pass --data-dir DIR"
            )
        return root
    root = default_data_root()
    if root.is_dir():
        return root
    raise DataError(
        f"no data root: --data-dir not given, ${ENV_VAR} not set, and the default {root} does not exist; "
        f"pass --data-dir DIR or set {ENV_VAR}=DIR"
    )


def require_file(root: str | Path, relpath: str | Path) -> Path:
    """`root/relpath`, which must be an existing file."""
    path = Path(root) / relpath
    if not path.is_file():
        raise DataError(
            f"missing data file {Path(relpath).as_posix()}: looked for {path} under data root {root}; "
            f"point --data-dir or ${ENV_VAR} at a folder that holds it"
        )
    return path


def content_fingerprint(path: str | Path) -> str:
    """A digest of a file's bytes, or of a folder's files (relative names and bytes, in sorted order, links
    followed); "absent" when nothing is there. Two data roots with the same content give the same digest."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path, 16)
    if not path.is_dir():
        return "absent"
    h = hashlib.sha256()
    files = sorted(Path(folder, name) for folder, _, names in os.walk(path, followlinks=True) for name in names)
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]
