"""Tests for lens_steer.methods.search.workers: the optimiser finds a known optimum, workers share a budget, a killed
worker's trial is failed by its silence and retried with the same parameters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from _study_fixtures import SMALL

from lens_steer.methods.search.space import SearchConfig, SearchSpace
from lens_steer.methods.search.storage import open_storage, open_study
from lens_steer.methods.search.workers import run_trials

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_search_finds_known_optimum() -> None:
    study, _ = open_study(open_storage(None), "known", config=SearchConfig(space=SMALL))

    def f(p: dict, trial: optuna.Trial) -> float:
        return (
            -((p["coeff"] - 1.2) ** 2)
            - ((p["num_sents"] - 300) / 200) ** 2
            + (p["corpus"] == "race")
            + 0.5 * (p["layers"] == "1-2")
        )

    run_trials(study, f, SMALL, 60, seed=3)
    best = study.best_params
    assert best["corpus"] == "race" and best["layers"] == "1-2"
    assert abs(best["coeff"] - 1.2) <= 0.41 and abs(best["num_sents"] - 300) <= 100
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == 60


_WORKER = textwrap.dedent(
    """
    import sys, time, pathlib, optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from lens_steer.methods.search.space import SearchSpace, SearchConfig
    from lens_steer.methods.search.storage import open_storage, open_study
    from lens_steer.methods.search.workers import run_trials
    url, marks, name, resume, sleep = (
        sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", float(sys.argv[5])
    )
    space = SearchSpace(
        kinds=("additive",), corpora=("age",), num_sents=(2, 10, 1), personas=(0,), templates=(0,),
        coeff=(-2, 2, 0.5), layers=((1,),), methods=("mean_diff",),
    )
    cfg = SearchConfig(space=space, n_trials=int(sys.argv[6]))
    study, used = open_study(open_storage(url, heartbeat_interval=1, grace_period=2), "s", config=cfg, resume=resume)
    barrier = sys.argv[7].split(",") if len(sys.argv) > 7 else []
    def objective(p, trial):
        (marks / f"start-{trial.number}").touch()
        (marks / f"worker-{name}").touch()
        deadline = time.time() + 60
        while not all((marks / f"worker-{w}").exists() for w in barrier) and time.time() < deadline:
            time.sleep(0.02)  # the first trials wait until every worker of the barrier is inside a trial
        time.sleep(sleep)
        with open(marks / f"ran-{name}.txt", "a") as f:
            f.write(f"{trial.number}\\n")
        return p["coeff"] + p["num_sents"] / 10
    run_trials(study, objective, space, used.n_trials, seed=0, poll_seconds=0.2)
    """
)


def _worker(
    url: str, marks: Path, name: str, resume: bool, sleep: float, n: int, barrier: str = ""
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", _WORKER, url, str(marks), name, "1" if resume else "0", str(sleep), str(n)] + (
        [barrier] if barrier else []
    )
    return subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_sigkill_mid_trial_then_resume_keeps_completed_trials(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'journal.log'}"
    load = (lambda: url) if kind == "sqlite" else (lambda: _journal(tmp_path / "journal.log"))
    proc = _worker(url, tmp_path, "a", False, 0.6, 6)
    _wait_for(tmp_path / "start-3", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = optuna.load_study(study_name="s", storage=load()).get_trials()
    done = {t.number: t.value for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    killed = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert sorted(done) == [0, 1, 2] and [t.number for t in killed] == [3]

    resumed = _worker(url, tmp_path, "b", True, 0.2, 6)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    after = optuna.load_study(study_name="s", storage=load()).get_trials()
    complete = {t.number: t for t in after if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 6
    for number, value in done.items():
        assert complete[number].value == value
    by_number = {t.number: t for t in after}
    assert by_number[3].state == optuna.trial.TrialState.FAIL
    retries = [t for t in complete.values() if t.system_attrs.get("failed_trial") == 3]
    assert len(retries) == 1 and retries[0].params == killed[0].params


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def test_two_workers_share_one_journal_study(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'journal.log'}"
    # each worker's first trial waits until the other is inside a trial too: both take part however late one starts
    a = _worker(url, tmp_path, "a", False, 0.3, 8, barrier="a,b")
    b = _worker(url, tmp_path, "b", False, 0.3, 8, barrier="a,b")
    for p in (a, b):
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:] if p.stderr else ""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    complete = {t.number for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    ran_a = [int(x) for x in (tmp_path / "ran-a.txt").read_text().split()]
    ran_b = [int(x) for x in (tmp_path / "ran-b.txt").read_text().split()]
    assert len(complete) == 8
    assert ran_a and ran_b and not set(ran_a) & set(ran_b)
    assert set(ran_a) | set(ran_b) == complete


def test_pruned_trials_count_toward_the_budget_and_only_those_below_the_median_are_pruned() -> None:
    """open_study's median pruner (after `pruner_startup_trials` complete trials) stops a trial whose first
    report is below the median of the earlier trials' first reports; pruned trials are finished trials."""
    space = SearchSpace(
        kinds=("additive",),
        corpora=("age",),
        num_sents=(2, 10, 1),
        personas=(0,),
        templates=(0,),
        coeff=(-2, 2, 0.5),
        layers=((1,),),
        methods=("mean_diff",),
    )
    study, used = open_study(
        open_storage(None), "pruning", config=SearchConfig(space=space, n_trials=5, pruner_startup_trials=2)
    )
    first_report = [
        1.0,
        1.0,
        0.0,
        2.0,
        0.5,
    ]  # by trial number: the median of earlier first reports is 1.0 from trial 2 on
    reported: list[int] = []

    def objective(params: dict, trial: optuna.Trial) -> float:
        trial.report(first_report[trial.number], 0)
        reported.append(trial.number)
        if trial.should_prune():
            raise optuna.TrialPruned()
        trial.report(first_report[trial.number] + 0.1, 1)
        return first_report[trial.number] + 0.1

    assert run_trials(study, objective, space, used.n_trials, seed=0) == 5
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]  # 0.0 < 1.0 and 0.5 < 1.0; 2.0 is above
    assert reported == [0, 1, 2, 3, 4]
    assert [sorted(t.intermediate_values) for t in study.get_trials()] == [[0, 1], [0, 1], [0], [0, 1], [0]]


def test_a_killed_first_stage_trial_is_retried_and_every_stage_point_runs_once() -> None:
    """The first stage's points by hand: trial 1 is killed (failed, its retry queued with its params, as a silent
    worker's is), and the search still runs each point exactly once, in order, before any TPE trial."""
    from lens_steer.methods.search.workers import StagedSampler, fail_and_retry

    stage = [{"coeff": -2.0}, {"coeff": -1.0}, {"coeff": 1.0}, {"coeff": 2.0}]
    study, _ = open_study(open_storage(None), "staged", config=SearchConfig(space=SMALL))
    run_trials(study, lambda p, t: p["coeff"], SMALL, 1, seed=0, first_stage=stage)
    study.sampler = StagedSampler(stage, optuna.samplers.RandomSampler(seed=0))
    killed = study.ask()
    SMALL.suggest(killed)  # the trial draws its point, then its worker dies
    assert killed.params["coeff"] == -1.0
    assert fail_and_retry(study, study.trials[killed.number], None)
    run_trials(study, lambda p, t: p["coeff"], SMALL, len(stage) + 1, seed=0, first_stage=stage)
    states = optuna.trial.TrialState
    finished = [t.params["coeff"] for t in study.get_trials(states=(states.COMPLETE,))]
    assert finished[: len(stage)] == [p["coeff"] for p in stage]  # each point once, the retry in the killed one's place
    assert len(finished) == len(stage) + 1 and [t.state for t in study.trials].count(states.FAIL) == 1
