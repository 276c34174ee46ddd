"""Kills at any moment: `lens-steer reproduce --budget smoke` on the tiny model, killed and re-run.

One uninterrupted run is the reference. A second run in the same folder path is SIGKILLed mid-trial,
mid-evaluation and between results.json and report.html, interrupted once with SIGINT (Ctrl-C), has
cached activations cut and stored predictions truncated or edited between runs, and meets a second
`reproduce` on its folder (refused: the folder is locked). Its final results.json must equal the
reference's minus timing fields, every study must hold exactly the budget's trials with the
reference's parameters, and every damaged file must have been recomputed byte for byte.
Re-running `search --resume` with the original flags is accepted; a differing flag is refused by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)
CLI = Path(sys.executable).parent / "lens-steer"
AXES = "age,religion"
TIMING_KEYS = {"seconds", "stage_seconds"}
SMOKE_TRIALS = 6  # the smoke budget's trials per axis (lens_steer.pipeline.budgets; checked below)


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LENS_STEER_DATA": str(DATA),
        "LENS_STEER_CACHE": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
    }


def _argv(out: Path) -> list[str]:
    return [
        str(CLI),
        "reproduce",
        "--budget",
        "smoke",
        "--model",
        "tiny-llama",
        "--axes",
        AXES,
        "--data-dir",
        str(DATA),
        "--out",
        str(out),
    ]


class Run:
    """A `reproduce` process whose stderr lines are collected by a thread as they come."""

    def __init__(self, out: Path, tmp: Path) -> None:
        # Ctrl-C's default disposition in the child: a shell's background job (e.g. CI started with `&`) inherits
        # SIGINT ignored, and Python keeps an inherited SIG_IGN, so the SIGINT step would test nothing there
        self.proc = subprocess.Popen(
            _argv(out),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 400.0, poll: float = 0.01) -> None:
        """Poll `ready` until it holds; fail if the run ends first."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, (
                f"the run ended before {what}: rc {self.proc.returncode}; last lines {self.lines[-5:]}"
            )
            assert time.monotonic() < deadline, f"no {what} within {timeout}s; last lines {self.lines[-5:]}"
            time.sleep(poll)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return rc

    def finish(self, timeout: float = 600.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return rc


def _running_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as con:
            return int(con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
    except sqlite3.Error:
        return 0


def _strip_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def _trials(out: Path) -> dict[str, list[Any]]:
    """Per study: the finished trials' parameters in order, the failed trials' numbers, and the retried numbers."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'optuna.db'}"
    found = {}
    for s in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        ts = study.get_trials(deepcopy=False)
        retried = [optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) for t in ts]
        found[s.study_name] = [
            [t.params for t in ts if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)],
            sorted(t.number for t in ts if t.state == optuna.trial.TrialState.FAIL),
            sorted(r for r in retried if r is not None),
            sorted(t.number for t in ts),
        ]
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run, made in the same folder path the killed run will use, then moved aside."""
    tmp = tmp_path_factory.mktemp("kills")
    run_dir, ref_dir = tmp / "run", tmp / "reference"
    started = time.monotonic()
    res = subprocess.run(_argv(run_dir), capture_output=True, text=True, env=_env(tmp), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    seconds = time.monotonic() - started
    run_dir.rename(ref_dir)
    return {"tmp": tmp, "run": run_dir, "ref": ref_dir, "seconds": seconds, "stderr": res.stderr}


def test_a_redirected_run_logs_every_stage(reference: dict[str, Any]) -> None:
    lines = reference["stderr"].splitlines()
    for stage in (
        "ISV search: age",
        "ISV search: religion",
        f"trial {SMOKE_TRIALS} of {SMOKE_TRIALS}",
        "test split: age",
        "MMLU retention",
        "layer sweep",
        "geometry",
    ):
        assert any(stage in line for line in lines), f"no log line for {stage!r}"
    # the run folder's progress.log holds the same lines, each after a wall-clock stamp
    logged = (reference["ref"] / "progress.log").read_text().splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split(" ", 1)[1] for line in logged] == progress and len(progress) > 10
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line.split(" ", 1)[0]) for line in logged)


def test_killed_at_any_moment_and_rerun_gives_the_uninterrupted_results(reference: dict[str, Any]) -> None:
    tmp, out, ref = reference["tmp"], reference["run"], reference["ref"]
    db = out / "optuna.db"

    # 1. SIGKILL mid-trial: a trial is RUNNING in the study when the process dies
    run = Run(out, tmp)
    run.wait_for(
        lambda: run.saw("ISV search: religion") and _running_trials(db) > 0, "a running trial of the second study"
    )
    run.kill()
    assert _running_trials(db) == 1, "the kill did not land inside a trial"
    acts = sorted((out / "activations").glob("*.pt"))
    assert acts, "no activation cache was written"
    for p in acts:  # cut every cached activation file: the remaining trials must not trust them
        p.write_bytes(p.read_bytes()[:100])

    # 2. re-run; a second reproduce on the same folder is refused with one line naming the lock
    run = Run(out, tmp)
    run.wait_for(lambda: run.saw("loading tiny-llama"), "the model load")
    second = subprocess.run(_argv(out), capture_output=True, text=True, env=_env(tmp), timeout=120)
    assert second.returncode == 2 and second.stdout == "", second.stderr
    err = second.stderr.strip().splitlines()
    assert (
        len(err) == 1
        and str(out / ".lens_steer.lock") in err[0]
        and "in use" in err[0]
        and f"pid {run.proc.pid}" in err[0]
    ), err
    # then SIGKILL mid-evaluation (the test split of the second axis)
    run.wait_for(lambda: run.saw("test split: religion"), "the test-split evaluation", poll=0.05)
    time.sleep(0.5)
    run.kill()
    assert not (out / "results.json").exists()

    # 3. damage the prediction store between runs: a truncated, an edited and a garbled file, a stray temp file
    preds = sorted(p for p in (out / "predictions").glob("*.jsonl"))
    assert len(preds) >= 3, preds
    damaged = {p.name: p.read_bytes() for p in preds[:3]}
    lines0 = preds[0].read_text().splitlines()
    preds[0].write_text("\n".join(lines0[:-1]) + "\n")  # truncated: one row short
    row = json.loads(preds[1].read_text().splitlines()[0])
    edited = {**row, "pred": (row["pred"] + 1) % 3} if "pred" in row else {**row, "correct": not row.get("correct")}
    preds[1].write_text(
        "\n".join([json.dumps(edited), *preds[1].read_text().splitlines()[1:]]) + "\n"
    )  # valid JSON, wrong value
    preds[2].write_bytes(
        preds[2].read_bytes()[: len(damaged[preds[2].name]) // 2] + b"\x00\xff garbage"
    )  # cut mid-line
    (out / "predictions" / f".{preds[0].name}.x1y2.tmp").write_text('{"half": ')  # a temp file a killed writer left

    # 4. SIGINT (Ctrl-C) as the ensemble stage starts (most of the run still ahead: on a loaded machine a line is
    # read seconds late, and a later stage could be done by then): one line, exit 130, the folder stays resumable
    run = Run(out, tmp)
    run.wait_for(lambda: run.saw("ensembles:"), "the ensemble stage", poll=0.05)
    rc = run.kill(signal.SIGINT)
    assert rc == 130, run.lines[-5:]
    assert run.lines and run.lines[-1].startswith("interrupted: ") and "re-run the same command" in run.lines[-1], (
        run.lines[-5:]
    )
    assert not any("Traceback" in line for line in run.lines), "\n".join(run.lines[-30:])

    # 5. SIGKILL while the report is being written: results.json is there, report.html not yet
    report = out / "report.html"
    run = Run(out, tmp)
    run.wait_for(lambda: (out / "results.json").is_file(), "results.json", poll=0.002)
    run.kill()
    if report.exists():  # the kill came after the report: still a valid state, the next run rewrites both
        report.unlink()

    # 6. the last run finishes
    run = Run(out, tmp)
    assert run.finish() == 0, run.lines[-10:]

    got = json.loads((out / "results.json").read_text())
    want = json.loads((ref / "results.json").read_text())
    assert _strip_timing(got) == _strip_timing(want)
    untimed = lambda md: [line for line in md.splitlines() if not line.startswith("- seconds:")]  # noqa: E731
    assert report.is_file() and untimed((out / "results.md").read_text()) == untimed((ref / "results.md").read_text())
    # every damaged file was recomputed: same content as the reference run's file of the same key
    for name in damaged:
        assert (out / "predictions" / name).read_bytes() == (ref / "predictions" / name).read_bytes(), name
    import torch

    reread = [p for p in acts if p.stat().st_size != 100]  # a file no later trial needed may stay damaged
    for p in reread:  # re-read from the model, equal to the reference's cache of the same key
        mine, theirs = torch.load(p, weights_only=True), torch.load(ref / "activations" / p.name, weights_only=True)
        n = min(mine["n"], theirs["n"])
        assert all(torch.equal(mine[s][k][:n], theirs[s][k][:n]) for s in ("positive", "negative") for k in mine[s]), (
            p.name
        )
    # no trial lost or duplicated: the budget's trials, the reference's parameters, each killed trial retried once
    got_t, want_t = _trials(out), _trials(ref)
    assert set(got_t) == set(want_t) and len(got_t) == 2
    for study, (params, failed, retried, numbers) in got_t.items():
        assert params == want_t[study][0] and len(params) == SMOKE_TRIALS, study
        assert failed == retried, f"{study}: failed trials {failed}, retried {retried}"
        assert numbers == list(range(len(numbers))), study
    assert sum(len(v[1]) for v in got_t.values()) == 1  # exactly the one trial the first kill interrupted


def test_search_resume_accepts_the_original_flags_and_names_a_different_one(tmp_path: Path) -> None:
    space = tmp_path / "space.json"
    space.write_text('{"num_sents": [4, 8, 4], "layers": ["1", "2"]}\n')
    base = [
        str(CLI),
        "search",
        "--model",
        "tiny-llama",
        "--axis",
        "age",
        "--limit",
        "4",
        "--space",
        str(space),
        "--seed",
        "3",
        "--data-dir",
        str(DATA),
        "--out",
        str(tmp_path / "s"),
    ]
    first = subprocess.run([*base, "--trials", "2"], capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(
        [*base, "--trials", "3", "--resume"], capture_output=True, text=True, env=_env(tmp_path), timeout=300
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trial 3 of 3" in again.stderr and "trial 1 of" not in again.stderr  # resumed: only the new trial ran
    other = subprocess.run(
        [*[a if a != "3" else "4" for a in base], "--resume"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
    )
    err = other.stderr.strip().splitlines()
    assert other.returncode == 2 and len(err) == 1, other.stderr
    assert "--seed 4" in err[0] and "stored: 3" in err[0], err[0]


def test_reproduce_rerun_with_a_different_option_is_refused_by_name(reference: dict[str, Any]) -> None:
    ref = reference["ref"]
    before = {p: p.stat().st_mtime_ns for p in ref.rglob("*")}
    argv = [a if a != "smoke" else "small" for a in _argv(ref)]
    res = subprocess.run(argv, capture_output=True, text=True, env=_env(reference["tmp"]), timeout=300)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and err[-1].startswith("error: ") and "--budget 'smoke', not 'small'" in err[-1], (
        res.stderr
    )
    assert {p: p.stat().st_mtime_ns for p in ref.rglob("*") if p.name != ".lens_steer.lock"} == {
        p: m for p, m in before.items() if p.name != ".lens_steer.lock"
    }


def test_a_redirected_extract_logs_a_line_per_tenth(tmp_path: Path) -> None:
    """stderr is a file, not a terminal: no progress bar, but a start line and one line per tenth of the work."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"positive": f"young view {i}", "negative": f"old view {i}"}) + "\n" for i in range(20))
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        res = subprocess.run(
            [
                str(CLI),
                "extract",
                "--model",
                "tiny-llama",
                "--pairs",
                str(pairs),
                "--layers",
                "1",
                "--batch-size",
                "4",
                "--out",
                str(tmp_path / "v.safetensors"),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=_env(tmp_path),
            timeout=300,
        )
    assert res.returncode == 0
    lines = [line for line in log.read_text().splitlines() if line.startswith("extract: ")]
    assert lines[0] == "extract: 0 of 40" and lines[-1] == "extract: 40 of 40 (100%)"
    done = [int(line.split()[1]) for line in lines]
    assert done == sorted(done) and len(lines) >= 6  # batches of 4 texts: a line at least every 8 of the 40 texts
    assert "\r" not in log.read_text()  # no bar redrawn in the log


def test_the_profile_of_a_run_charges_every_second_of_its_log_to_a_stage(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "profile.json"
    res = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "benchmarks" / "profile_run.py"),
            str(reference["ref"]),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(out.read_text())
    stamps = [
        int(re.search(r"\[\s*(\d+)s\]", line).group(1))
        for line in (reference["ref"] / "progress.log").read_text().splitlines()
    ]  # type: ignore[union-attr]
    assert got["total_seconds"] == stamps[-1] - stamps[0] == sum(s["seconds"] for s in got["stages"])
    steps = {s["stage"]: s["steps"] for s in got["stages"]}
    axes = AXES.split(",")
    assert steps["AXIS: trial N of N"] == SMOKE_TRIALS * len(axes) and steps["test split: AXIS"] == len(axes)


def test_the_smoke_budget_has_the_trials_these_tests_count() -> None:
    from lens_steer.pipeline.budgets import BUDGETS

    assert BUDGETS["smoke"].trials == SMOKE_TRIALS
