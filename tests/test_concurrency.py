"""Concurrent workers on a real database: two `lens-steer search` processes on one study, on SQLite and on a
PostgreSQL server this module starts (installed from Debian's packages where absent; skipped, with the
reason printed, only where it cannot be started).

The trial budget is exact, trial numbers are unique, a worker SIGKILLed mid-trial loses only that trial
(the next worker fails it by the heartbeat and re-runs it with the same parameters), and TPE's constant
liar makes a running trial of another worker change where the sampler proposes next.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from _system_packages import ensure_program, find_program

from lens_steer.methods.search.space import PARAM_NAMES, SearchSpace
from lens_steer.methods.search.workers import run_trials

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLI = Path(sys.executable).parent / "lens-steer"
PG_BIN_DIRS = ("/usr/lib/postgresql/*/bin",)
PG_USER, PG_DB = "lens", "optuna"
optuna.logging.set_verbosity(optuna.logging.ERROR)
needs_data = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)


# ----------------------------------------------------------------------------- a PostgreSQL server of our own
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _skip(reason: str) -> None:
    print(f"\nSKIPPED PostgreSQL tests: {reason}", file=sys.stderr)
    pytest.skip(f"PostgreSQL server cannot be started here: {reason}")


def postgres_commands(bindir: Path, root: Path, port: int) -> list[list[str]]:
    """The commands that set up and start the server (docs/search.md shows them): a cluster in `root/data`
    with a trusted local user, the server on 127.0.0.1:`port`, and an empty database for the studies."""
    data, log = root / "data", root / "server.log"
    return [
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8", "--no-sync"],
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections=500",
            "start",
        ],
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DB],
    ]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """postgresql://lens@127.0.0.1:<port>/optuna on a fresh server, stopped and deleted afterwards."""
    initdb, reason = ensure_program("initdb", "postgresql", PG_BIN_DIRS)
    if initdb is None:
        _skip(reason)
    bindir = Path(initdb).resolve().parent
    if not (bindir / "pg_ctl").is_file() or find_program("createdb", (str(bindir),)) is None:
        _skip(f"pg_ctl or createdb missing beside {initdb}")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        _skip("the PostgreSQL driver psycopg is not installed (pip install 'psycopg[binary]'; scripts/setup.sh does)")
    root = Path(tempfile.mkdtemp(prefix="lens_steer_pg_"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            _skip("running as root and runuser is missing, so the server cannot run as another user")
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = [runuser, "-u", "nobody", "--"]
    port = _free_port()
    started = False
    try:
        for cmd in postgres_commands(bindir, root, port):
            res = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, cwd=root)
            if res.returncode != 0:
                log = (root / "server.log").read_text(errors="replace")[-500:] if (root / "server.log").exists() else ""
                _skip(f"{Path(cmd[0]).name} failed: {(res.stderr or res.stdout).strip()[-300:]} {log}")
            started = started or Path(cmd[0]).name == "pg_ctl"
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{PG_DB}"
    finally:
        if started:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return str(request.getfixturevalue("postgres_url"))


# ----------------------------------------------------------------------------- workers
def _worker(storage: str, study: str, out: Path, trials: int, space: Path) -> subprocess.Popen[str]:
    argv = [
        str(CLI),
        "search",
        "--model",
        "tiny-llama",
        "--axis",
        "age",
        "--trials",
        str(trials),
        "--limit",
        "8",
        "--space",
        str(space),
        "--storage",
        storage,
        "--study",
        study,
        "--heartbeat",
        "1",
        "--data-dir",
        str(DATA),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "LENS_STEER_DATA": str(DATA)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture()
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.json"
    path.write_text('{"num_sents": [4, 16, 4], "layers": ["1", "2", "3"]}\n')
    return path


def _states(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _check_budget(trials: list[optuna.trial.FrozenTrial], n: int) -> list[optuna.trial.FrozenTrial]:
    """The budget is exact and trial numbers are unique; returns the finished trials."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers))), numbers
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    return finished


@needs_data
def test_two_workers_fill_the_budget_exactly(storage: str, space: Path, tmp_path: Path) -> None:
    study = f"conc-{uuid.uuid4().hex[:8]}"
    workers = [_worker(storage, study, tmp_path / f"w{i}", 6, space) for i in (0, 1)]
    for w in workers:
        out, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-2000:]
    trials = _states(storage, study)
    finished = _check_budget(trials, 6)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    points = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(points)) == len(points), "two workers proposed the same point"
    # a trial started after the budget was full ends as a marked surplus, never as a seventh result
    extra = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get("surplus") for t in extra)
    for i in (0, 1):  # both workers wrote the best trial's vector
        assert (tmp_path / f"w{i}" / "isv.safetensors").is_file()


def _kill_inside_a_later_trial(
    storage: str, study: str, worker: subprocess.Popen[str]
) -> list[optuna.trial.FrozenTrial]:
    """SIGKILL `worker` (the study's only worker) once it has finished a trial and is inside another (its
    parameters drawn, the objective running); returns the trials as the kill left them (empty if the kill
    landed elsewhere: between two trials, or while the next one was drawing its parameters)."""
    deadline = time.monotonic() + 300
    while True:
        assert worker.poll() is None, "the worker ended before it was inside its second trial"
        assert time.monotonic() < deadline, "the worker never ran a trial"
        try:
            ts = _states(storage, study)
        except KeyError:  # the study is not created yet
            ts = []
        inside = lambda trials: any(  # noqa: E731
            t.state == optuna.trial.TrialState.RUNNING and len(t.params) == len(PARAM_NAMES) for t in trials
        )  # noqa: E731
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in ts) and inside(ts):
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=60)
            after = _states(storage, study)
            return after if inside(after) else []
        time.sleep(0.005)


@needs_data
def test_a_worker_killed_mid_trial_loses_only_that_trial(storage: str, space: Path, tmp_path: Path) -> None:
    """Worker a is SIGKILLed inside a trial after finishing at least one; worker b, started next, fails the
    silent trial after the heartbeat's grace period and re-runs it: only that trial is lost, a's finished ones stay."""
    for attempt in range(3):  # a kill that lands between two trials interrupts nothing: try again
        study = f"kill-{uuid.uuid4().hex[:8]}"
        before = _kill_inside_a_later_trial(storage, study, _worker(storage, study, tmp_path / f"a{attempt}", 6, space))
        if before:
            break
    assert before, "three kills in a row landed between trials"
    mine = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    kept = {t.number: t.value for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(mine) == 1 and kept, [(t.number, t.state.name) for t in before]
    b = _worker(storage, study, tmp_path / "b", 6, space)
    _, err = b.communicate(timeout=600)
    assert b.returncode == 0, err[-2000:]
    trials = _states(storage, study)
    finished = _check_budget(trials, 6)
    by_number = {t.number: t for t in trials}
    assert {n: by_number[n].value for n in kept} == kept  # a's finished trials are kept as they were
    killed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert [t.number for t in killed] == [mine[0].number]  # only the interrupted trial was lost
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retries = [
            t for t in finished if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == mine[0].number
        ]
    assert len(retries) == 1, [(t.number, t.system_attrs) for t in finished]
    assert retries[0].params == mine[0].params  # re-run at the same point


# ----------------------------------------------------------------------------- constant liar
LIAR_SPACE = SearchSpace(
    kinds=("additive",),
    corpora=("age",),
    num_sents=(4, 8, 4),
    personas=(0, 1, 2),
    templates=(0,),
    coeff=(-4.0, 4.0, 0.1),
    layers=((1,), (2,)),
    methods=("mean_diff",),
)


AWAY = {
    "corpus": "age",
    "num_sents": 4,
    "persona": 0,
    "template": 0,
    "layers": "1",
    "method": "mean_diff",
    "coeff": -4.0,
}


def _proposal_while_running(point: dict[str, Any]) -> dict[str, Any]:
    """The point run_trials proposes after 6 finished trials while another worker runs a trial at `point`."""
    study = optuna.create_study(direction="maximize")
    run_trials(study, lambda p, t: -abs(p["coeff"] - 1.0), LIAR_SPACE, 6, seed=0, tpe_startup_trials=2)
    study.enqueue_trial(point)
    other = study.ask()
    LIAR_SPACE.suggest(other)  # the other worker's trial, still RUNNING
    proposed: dict[str, Any] = {}

    def objective(params: dict[str, Any], trial: optuna.Trial) -> float:
        proposed.update(params)
        study.tell(other, 0.0)  # the other worker finishes meanwhile
        return 0.0

    run_trials(study, objective, LIAR_SPACE, 8, seed=0, tpe_startup_trials=2)
    return proposed


def _proposal_without_liar(point: dict[str, Any]) -> dict[str, Any]:
    """The same situation through a TPE sampler without the liar (it ignores running trials)."""
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=2, constant_liar=False)
    )
    for _ in range(6):
        t = study.ask()
        study.tell(t, -abs(LIAR_SPACE.suggest(t)["coeff"] - 1.0))
    study.enqueue_trial(point)
    LIAR_SPACE.suggest(study.ask())
    study.sampler = optuna.samplers.TPESampler(seed=2, n_startup_trials=2, constant_liar=False)
    return LIAR_SPACE.suggest(study.ask())


def test_running_trials_of_other_workers_steer_the_proposal() -> None:
    """Same history, same seed; only the other worker's running point differs. With the worker far away
    the sampler proposes P; with the other worker running at P itself, TPE's constant liar counts that
    trial as a bad result and proposes elsewhere. Without the liar the running trial changes nothing."""
    first = _proposal_while_running(AWAY)
    assert first and _proposal_while_running(first) != first
    plain = _proposal_without_liar(AWAY)
    assert _proposal_without_liar(plain) == plain
