"""Running a study's trials: any number of workers (processes or machines) share one budget of finished trials,
each draws its own seeded TPE proposals, and a killed worker's trial is failed by its silence and retried."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lens_steer.errors import StudyError
from lens_steer.methods.search.space import Params, SearchSpace
from lens_steer.methods.search.storage import Heartbeat, HeartbeatJournalStorage, retry_callback

FINISHED: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_ATTR = "lens_steer_heartbeat"  # a journal trial's user attr: {"trial", "time", "grace", "max_retry"}

Objective = Callable[[Params, optuna.Trial], float]
TrialProgress = Callable[["TrialReport"], None]


@dataclasses.dataclass(frozen=True)
class TrialReport:
    """What a worker tells its progress callback after each of its trials."""

    finished: int
    n_trials: int
    trial_number: int
    state: str
    value: float | None
    best_value: float | None
    best_params: Params | None
    seconds: float


class _Surplus(Exception):
    """Raised inside a trial that another worker's earlier trial made unnecessary."""


def _beat(trial: optuna.Trial, heartbeat: Heartbeat) -> None:
    trial.set_user_attr(
        HEARTBEAT_ATTR,
        {"trial": trial.number, "time": time.time(), "grace": heartbeat.grace, "max_retry": heartbeat.max_retry},
    )


class _Heartbeat:
    """Beats into a running trial's user attrs every `interval` s, through Optuna's public `Trial.set_user_attr`
    (journal storages; RDB storages get Optuna's own heartbeat)."""

    def __init__(self, trial: optuna.Trial, heartbeat: Heartbeat) -> None:
        self.trial, self.heartbeat = trial, heartbeat
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.heartbeat.interval):
            try:
                _beat(self.trial, self.heartbeat)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                return

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's logger at ERROR for the block (failing another worker's trial is not this worker's failure)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def fail_and_retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> bool:
    """Mark a running trial FAIL (`Study.tell`) and enqueue its retry with the same params (Optuna's retry
    callback); False if it finished meanwhile."""
    with _quiet_optuna(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frozen = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            return False
        if frozen.state != TrialState.FAIL:
            return False
        retry_callback(max_retry)(study, frozen)
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail running trials whose worker stopped beating and queue a retry of each; returns their numbers.

    RDB storages: Optuna's own heartbeat check. Journal storages: the beat `run_trials` writes into each running
    trial (its time, and the grace and retry count its worker runs with); a running trial that never beat counts
    from its start, with the grace the study's other beats give.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # does nothing for storages without Optuna's heartbeat
    trials = study.get_trials(deepcopy=False)
    failed = sorted(t.number for t in trials if t.state == TrialState.FAIL and t.number in before)
    beats = {
        t.number: b
        for t in trials
        if isinstance(b := t.user_attrs.get(HEARTBEAT_ATTR), Mapping) and b.get("trial") == t.number
    }
    if not beats:
        return failed
    known = max(beats.values(), key=lambda b: float(b["time"]))
    now = time.time()
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        beat = beats.get(t.number)
        last = float(beat["time"]) if beat else (t.datetime_start.timestamp() if t.datetime_start else now)
        grace = float((beat or known)["grace"])
        if now - last > grace and fail_and_retry(study, t, (beat or known).get("max_retry")):
            failed.append(t.number)
    return sorted(failed)


def fail_orphaned_trials(study: optuna.Study, max_retry: int | None = 3) -> list[int]:
    """Fail every running trial at once and queue a retry of each; returns their numbers.

    Only for a storage no other process can be using (a locked run folder's own database): its running
    trials belong to a worker that was killed, so there is no heartbeat grace period to wait out."""
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if fail_and_retry(study, t, max_retry)
    ]


def _sampler(seed: int, n_before: int, startup: int) -> optuna.samplers.TPESampler:
    """A TPE sampler seeded from the study seed and `n_before`, the trials finished or running ahead of
    this one: a single worker draws the same points in every run (a killed trial's retry included), and
    workers running side by side draw different ones. `constant_liar` makes TPE count the other workers'
    running trials, so parallel workers do not propose the same point."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}:{n_before}".encode()).digest()[:4], "big")
    return optuna.samplers.TPESampler(seed=derived, n_startup_trials=startup, constant_liar=True)


class StagedSampler(optuna.samplers.BaseSampler):
    """The staged search's sampler: the first stage's points (each intervention kind at its default) in order, one
    per trial, then TPE's. Trial k takes point k minus the failed trials numbered below it (a killed trial's retry
    takes its point, and the next trial the next point), so each point runs once whoever runs it, and the choices
    do not depend on the sampler's seed."""

    def __init__(self, first_stage: Sequence[Mapping[str, Any]], tpe: optuna.samplers.BaseSampler) -> None:
        self.first_stage, self.tpe = [dict(p) for p in first_stage], tpe

    def stage_point(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any] | None:
        """The first-stage point `trial` takes, or None once the stage is done."""
        failed = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number < trial.number)
        index = trial.number - failed
        return self.first_stage[index] if index < len(self.first_stage) else None

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {} if self.stage_point(study, trial) is not None else self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if self.stage_point(study, trial) is not None:
            return {}
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        fixed = self.stage_point(study, trial)
        if fixed is not None and param_name in fixed:
            return fixed[param_name]
        return self.tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.tpe.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.tpe.after_trial(study, trial, state, values)


def _value(value: Any) -> float | tuple[float, ...]:
    """A trial's value for Optuna: a float, or a tuple of floats under several objectives."""
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)


def run_trials(
    study: optuna.Study,
    objective: Objective,
    space: SearchSpace,
    n_trials: int,
    *,
    seed: int = 0,
    tpe_startup_trials: int = 10,
    poll_seconds: float = 1.0,
    progress: TrialProgress | None = None,
    first_stage: Sequence[Mapping[str, Any]] = (),
) -> int:
    """Run trials until the study holds `n_trials` finished (complete or pruned) trials, counting every
    worker's. Returns how many trials this worker finished.

    A trial started while others already fill the budget ends as FAIL with user attr "surplus" (the
    earlier-numbered trial wins), so workers never overshoot. While the remaining budget is held by
    other workers' running trials this worker waits, failing stale ones so that a killed worker's
    trial is retried here.
    """
    if n_trials < 1:
        raise StudyError(f"n_trials must be at least 1, got {n_trials}")
    done_here = 0

    def wrapped(trial: optuna.Trial) -> float | tuple[float, ...]:
        earlier = [
            t
            for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state in FINISHED or (t.number < trial.number)
        ]
        if len(earlier) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus
        heartbeat = trial.storage.heartbeat if isinstance(trial.storage, HeartbeatJournalStorage) else None
        if heartbeat is None:
            study.sampler = StagedSampler(first_stage, _sampler(seed, len(earlier), tpe_startup_trials))
            return _value(objective(space.suggest(trial), trial))
        _beat(trial, heartbeat)  # at once: the trial is alive from its start
        with _Heartbeat(trial, heartbeat):
            study.sampler = StagedSampler(first_stage, _sampler(seed, len(earlier), tpe_startup_trials))
            return _value(objective(space.suggest(trial), trial))

    while True:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        if finished >= n_trials:
            return done_here
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if finished + running >= n_trials and waiting == 0:
            time.sleep(poll_seconds)
            continue
        start = time.perf_counter()
        last: list[FrozenTrial] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(wrapped, n_trials=1, catch=(_Surplus,), callbacks=[lambda s, t: last.append(t)])
        if not last or last[0].user_attrs.get("surplus"):
            continue
        t = last[0]
        done_here += t.state in FINISHED
        if progress is not None:
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            best = best_trial(study)
            progress(
                TrialReport(
                    finished=finished,
                    n_trials=n_trials,
                    trial_number=t.number,
                    state=t.state.name,
                    value=trial_score(t)
                    if trial_score(t) is not None
                    else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
                    best_value=trial_score(best) if best else None,
                    best_params=dict(best.params) if best else None,
                    seconds=time.perf_counter() - start,
                )
            )


def trial_score(t: FrozenTrial) -> float | None:
    """A finished trial's one number: its value, or under several objectives the `ambig_guarded` value it recorded."""
    if t.values is None:
        return None
    if len(t.values) == 1:
        return float(t.values[0])
    score = t.user_attrs.get("ambig_guarded")
    return None if score is None else float(score)


def best_trial(study: optuna.Study, kind: str | None = None) -> FrozenTrial | None:
    """The complete trial with the highest score (the earliest among ties), of intervention `kind` if given
    (trials without a kind are additive); None before any completes. Under several objectives: the best-scored
    trial of the Pareto front."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front] or complete
    if kind is not None:
        complete = [t for t in complete if t.params.get("kind", "additive") == kind]
    scored = [t for t in complete if trial_score(t) is not None]
    return max(scored, key=lambda t: (trial_score(t), -t.number)) if scored else None


__all__ = [
    "FINISHED",
    "HEARTBEAT_ATTR",
    "Objective",
    "TrialProgress",
    "TrialReport",
    "best_trial",
    "trial_score",
    "fail_and_retry",
    "fail_orphaned_trials",
    "fail_stale_trials",
    "run_trials",
]
