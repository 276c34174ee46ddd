"""benchmarks/diff_runs.py on hand-made run folders: equal runs pass, a margin may differ in its last digits, an
accuracy or a prediction may not; evaluations are matched by what they evaluated, not by file name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "diff_runs.py"


def make_run(
    folder: Path,
    *,
    acc: float = 0.5,
    margin: float = 1.25,
    preds: tuple[int, ...] = (0, 2, 1),
    file: str = "a1.jsonl",
    seconds: float = 10.0,
) -> Path:
    """A run folder with one accuracy, one margin, a timing, its own path, and one evaluation of three items."""
    (folder / "predictions").mkdir(parents=True)
    results = {
        "meta": {
            "seconds": seconds,
            "stage_seconds": {"isv_search": seconds / 2},
            "storage": f"sqlite:///{folder}/optuna.db",
        },
        "ensemble": {"age": {"acc": {"value": acc}, "unknown_margin": {"value": margin}}},
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "predictions" / file).write_text("".join(json.dumps({"pred": p}) + "\n" for p in preds))
    entry = {
        "model": "m",
        "vector": "none",
        "coeff": 0.0,
        "items": "abc",
        "file": file,
        "sha256": file * 2,
        "scoring_version": 2,
    }
    (folder / "predictions" / "index.json").write_text(json.dumps({file: entry}))
    return folder


def diff(a: Path, b: Path, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"{a.name}-{b.name}.json"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(a), str(b), "--json", str(out)], capture_output=True, text=True, timeout=60
    )
    return res.returncode, json.loads(out.read_text())


def test_runs_that_differ_only_in_timings_paths_and_file_names_are_equal(tmp_path: Path) -> None:
    rc, got = diff(make_run(tmp_path / "one"), make_run(tmp_path / "two", seconds=99.0, file="b2.jsonl"), tmp_path)
    assert rc == 0 and got["numbers_differ"] == 0 and got["other_differences"] == [] and got["items_identical"] == 3
    assert got["equal"] == 3  # acc, margin, storage (its run folder written as RUN)


def test_a_margin_may_differ_in_its_last_digits_an_accuracy_or_a_prediction_may_not(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base")
    rc, got = diff(base, make_run(tmp_path / "margin", margin=1.25 + 3e-6), tmp_path)
    assert rc == 0 and got["numbers_differ"] == 1 and got["not_margins"] == 0
    assert (
        abs(got["numbers"][0]["abs_diff"] - 3e-6) < 1e-12
        and got["numbers"][0]["path"] == "/ensemble/age/unknown_margin/value"
    )
    rc, got = diff(base, make_run(tmp_path / "acc", acc=0.5 + 1 / 3), tmp_path)
    assert rc == 1 and got["not_margins"] == 1
    rc, got = diff(base, make_run(tmp_path / "pred", preds=(0, 2, 2)), tmp_path)
    assert rc == 1 and got["evaluations_identical"] == 0 and got["evaluations_matched"] == 1


def test_a_folder_without_a_finished_run_is_named_in_one_line(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "missing"), str(make_run(tmp_path / "one"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "missing holds no finished run" in res.stderr
