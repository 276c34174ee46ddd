"""The suite's CI rule (tests/conftest.py): with CI=true a missing-prerequisite skip fails, other skips stay skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SAMPLE = """
import pytest

needs_data = pytest.mark.skipif(True, reason="missing data: no BBQ files here")

@needs_data
def test_marked():
    pass

def test_skipped_inside():
    pytest.skip("missing weights: no embedded model")

def test_doc():
    pytest.skip("missing doc: method.md")

def test_optional_backend():
    pytest.skip("needs a PostgreSQL server; cannot start one here")

def test_passes():
    assert True
"""

MODULE_SKIP = """
import pytest
pytest.skip("missing data: the whole module needs the shared data", allow_module_level=True)

def test_never_runs():
    pass
"""


def _run(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=120,
    )


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    return tmp_path


def _count(summary: str, word: str) -> int:
    """The count pytest's last line gives for `word` ("3 failed, 2 skipped, 1 passed in ...")."""
    for part in summary.replace(" in ", ",").split(","):
        bits = part.strip().split()
        if len(bits) >= 2 and bits[1].rstrip("s") == word.rstrip("s"):
            return int(bits[0])
    return 0


def test_outside_ci_missing_prerequisites_are_skips(sample: Path) -> None:
    res = _run(sample, None)
    last = res.stdout.strip().splitlines()[-1]
    assert res.returncode == 0, res.stdout
    assert _count(last, "passed") == 1 and _count(last, "skipped") == 4 and _count(last, "failed") == 0, last


def test_in_ci_missing_prerequisites_fail_and_other_skips_stay(sample: Path) -> None:
    res = _run(sample, "true")
    last = res.stdout.strip().splitlines()[-1]
    assert res.returncode == 1, res.stdout
    # three tests fail (the skipif mark fails in setup, so pytest counts it an error); the backend skip stays a skip
    assert (
        _count(last, "failed") == 2
        and _count(last, "error") == 1
        and _count(last, "skipped") == 1
        and _count(last, "passed") == 1
    ), last
    assert "a missing prerequisite is a failure" in res.stdout
    assert "needs a PostgreSQL server" in res.stdout  # -rA lists the remaining skip with its reason


def test_in_ci_a_module_skipped_for_missing_data_is_a_collection_error(sample: Path) -> None:
    (sample / "test_sample.py").unlink()
    (sample / "test_module_skip.py").write_text(MODULE_SKIP)
    local = _run(sample, None)
    assert "1 skipped" in local.stdout and "failed" not in local.stdout and "error" not in local.stdout.lower(), (
        local.stdout
    )
    res = _run(sample, "1")
    assert res.returncode not in (0, 5), res.stdout
    assert "ERROR test_module_skip.py - CI=true: a missing prerequisite is a failure" in res.stdout


def test_ci_false_is_not_ci(sample: Path) -> None:
    assert _run(sample, "false").returncode == 0
