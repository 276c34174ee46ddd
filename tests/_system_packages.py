"""System programs some tests need (PostgreSQL, Chromium): found on this machine or installed from
Debian's packages with apt-get where that is possible (root, or passwordless sudo); else a reason to skip."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path


def find_program(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """`name` on PATH or in one of `extra_dirs` (glob patterns, newest first)."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for folder in sorted(glob.glob(pattern), reverse=True):
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def apt_install(packages: list[str], timeout: float = 900) -> str | None:
    """Install Debian `packages` (apt-get update first); None on success, else why it was not possible."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available (not a Debian-like system)"
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
            return "not root and no passwordless sudo, so apt-get cannot install " + " ".join(packages)
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        update = subprocess.run(
            [*prefix, "apt-get", "update"], capture_output=True, text=True, env=env, timeout=timeout
        )
        if update.returncode != 0:
            return f"apt-get update failed: {(update.stderr.strip().splitlines() or ['?'])[-1]}"
        inst = subprocess.run(
            [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *packages],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"apt-get install {' '.join(packages)} took longer than {timeout:.0f}s"
    if inst.returncode != 0:
        return f"apt-get install {' '.join(packages)} failed: {(inst.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def ensure_program(name: str, package: str, extra_dirs: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """(path to `name`, "") if present or installable from `package`; else (None, the reason)."""
    found = find_program(name, extra_dirs)
    if found:
        return found, ""
    reason = apt_install([package])
    found = find_program(name, extra_dirs)
    if found:
        return found, ""
    return None, reason or f"{package} was installed but {name} is not on PATH"
