"""The study's budgets (`smoke`, `small`, `paper`) and options as data, and the checks that refuse a run that
cannot be done or would mix with another in one folder (a lock per run folder, the same options on a re-run)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES
from lens_steer.errors import LensSteerError, LockHeldError
from lens_steer.files import file_lock


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of the study to run: trials, items and pairs."""

    name: str
    trials: int
    num_sents: tuple[int, int, int]
    val_limit: int
    test_limit: int
    ens_val_limit: int
    ens_coeffs: tuple[float, ...]
    ens_kinds: tuple[str, ...]
    control_seeds: tuple[int, ...]
    mmlu_items: int
    layers: tuple[tuple[int, ...], ...] | None
    corpora: tuple[str, ...] | None
    tpe_startup: int
    sweep_layers: tuple[int, ...]
    sweep_coeffs: tuple[float, ...]
    sweep_limit: int
    geometry_num_sents: int
    n_boot: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


BUDGETS: dict[str, Budget] = {
    # finishes in ~15 minutes on 2 CPU cores with the embedded model: a pipeline check, not a result
    "smoke": Budget(
        "smoke",
        trials=6,  # the first stage only: one trial per intervention kind at its default point
        num_sents=(16, 32, 16),
        val_limit=8,
        test_limit=12,
        ens_val_limit=8,
        ens_coeffs=(-2.0, 0.0, 2.0),
        ens_kinds=("sve", "sve_weighted"),
        control_seeds=(1,),
        mmlu_items=16,
        layers=((12,), (18,), (24,)),
        corpora=None,
        tpe_startup=6,
        sweep_layers=(12, 18, 24),
        sweep_coeffs=(-4.0, 4.0),
        sweep_limit=12,
        geometry_num_sents=16,
        n_boot=500,
    ),
    # a first look with intervals worth reading (about an hour on 2 CPU cores; see the README for the measured time)
    "small": Budget(
        "small",
        trials=16,
        num_sents=(32, 96, 32),
        val_limit=32,
        test_limit=64,
        ens_val_limit=32,
        ens_coeffs=(-4.0, -2.0, 0.0, 2.0, 4.0),
        ens_kinds=("sve", "sve_norm", "sve_weighted"),
        control_seeds=(1,),
        mmlu_items=64,
        layers=None,
        corpora=None,
        tpe_startup=7,
        sweep_layers=(6, 10, 14, 18, 22, 26),
        sweep_coeffs=(-4.0, -2.0, 2.0, 4.0),
        sweep_limit=32,
        geometry_num_sents=32,
        n_boot=1000,
    ),
    # the paper's budget: 50 trials per axis, 100..500 prompts (a GPU is recommended)
    "paper": Budget(
        "paper",
        trials=50,
        num_sents=(100, 500, 50),
        val_limit=400,
        test_limit=2000,
        ens_val_limit=200,
        ens_coeffs=tuple(float(c) for c in range(-5, 6)),  # 0 included: an ensemble may do best doing nothing
        ens_kinds=("sve", "sve_norm", "sve_weighted"),
        control_seeds=(1, 2, 3),
        mmlu_items=2000,
        layers=None,
        corpora=None,
        tpe_startup=10,
        sweep_layers=tuple(range(2, 30, 2)),
        sweep_coeffs=(-4.0, -2.0, -1.0, 1.0, 2.0, 4.0),
        sweep_limit=200,
        geometry_num_sents=200,
        n_boot=1000,
    ),
}


PROTOCOLS: tuple[str, ...] = (
    "sve-v1",
    "v2",
)  # how the per-axis vectors are chosen: the Optuna search, or the later paper's selection


SPLITS: tuple[str, ...] = ("ours", "v2")  # our seeded splits, or the later paper's exact files (bbq_v2_splits)


# the debiasing baselines judged beside the vectors when --baselines is not given. prompting costs about one plain
# evaluation per target; self-debias-schick about 18 (measured: 12 BBQ items on SmolLM2-135M, 1 thread, 5.6 s plain,
# 6.0 s prompting, 100 s self-debias-schick: seven prompts per option, a full-vocabulary distribution per token), which
# would about double the smoke and small budgets, so they judge prompting by default and take the others by --baselines
DEFAULT_BASELINES: dict[str, tuple[str, ...]] = {
    "smoke": ("prompting",),
    "small": ("prompting",),
    "paper": ("prompting", "self-debias-schick", "self-debias", "finetune"),
}


def default_baselines(budget: Budget, organism: bool = False) -> tuple[str, ...]:
    """The baselines a budget judges unless told otherwise (prompting alone outside the paper budget); on a bias
    model organism LoRA fine-tuning too, the ground truth's positive control (a method that should remove a bias
    it was trained against)."""
    found = DEFAULT_BASELINES.get(budget.name, ("prompting",))
    return tuple(dict.fromkeys((*found, "finetune"))) if organism else found


def check_study_options(protocol: str, splits: str, baselines: Sequence[str], axes: Sequence[str]) -> None:
    """Refuse option combinations the study cannot run, each with a one-line error."""
    from lens_steer.forward.questions import check_choice
    from lens_steer.methods.baselines.prompting import BASELINES

    check_choice(protocol, PROTOCOLS, "--protocol")
    check_choice(splits, SPLITS, "--splits")
    for b in baselines:
        check_choice(b, BASELINES, "baseline")
    if splits == "v2" and protocol != "v2":
        raise LensSteerError(
            "--splits v2 needs --protocol v2: the Optuna search (sve-v1) reads our seeded splits, whose train items "
            "may be the v2 files' test rows"
        )
    if protocol == "v2" or splits == "v2":
        from lens_steer.data.bbq_v2 import v2_axis

        for a in axes:
            v2_axis(a)  # an axis without a v2 split (sexual orientation) is refused here


def v2_axes() -> list[str]:
    """The axes the later paper kept (all but sexual orientation), in lens_steer's names."""
    from lens_steer.data.bbq_v2 import v2_axis
    from lens_steer.errors import DataError

    out = []
    for a in AXIS_NAMES:
        try:
            v2_axis(a)
        except DataError:
            continue
        out.append(a)
    return out


def get_budget(name: str) -> Budget:
    """The named budget, or a one-line error listing them."""
    if name not in BUDGETS:
        raise LensSteerError(f"unknown budget {name!r}; use one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


def fit_layers(budget: Budget, n_layers: int) -> tuple[tuple[int, ...], ...] | None:
    """Budget layer candidates scaled to the model's depth (the budgets are written for 30 layers)."""
    if budget.layers is None:
        return None
    return tuple(tuple(min(n_layers - 1, round(layer * n_layers / 30)) for layer in band) for band in budget.layers)


LOCK_NAME = ".lens_steer.lock"


_HELD: set[Path] = set()  # run folders this process holds


@contextmanager
def run_folder_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold `out_dir/.lens_steer.lock` while a run writes the folder (re-entrant within a process).

    An advisory lock (`lens_steer.files.file_lock`), released by the operating system when the holder exits,
    SIGKILL included, so a killed run never leaves a stale lock; a second process gets a one-line error naming the
    lock and its holder."""
    out = Path(out_dir).resolve()
    if out in _HELD:
        yield out
        return
    path = out / LOCK_NAME
    with ExitStack() as held:
        try:
            held.enter_context(
                file_lock(path, wait=False, note=f"lens-steer pid {os.getpid()} on {socket.gethostname()}\n")
            )
        except LockHeldError as e:
            raise LensSteerError(
                f"run folder {out} is in use: {path} is locked by {e.holder or 'another process'}; wait for that run "
                "to finish, or use another --out"
            ) from None
        _HELD.add(out)
        try:
            yield out
        finally:
            _HELD.discard(out)


_RUN_FLAGS = {
    "model": "--model",
    "budget": "--budget",
    "axes": "--axes",
    "seed": "--seed",
    "scoring": "--scoring",
    "protocol": "--protocol",
    "splits": "--splits",
}


def check_same_run(path: Path, run: dict[str, Any]) -> None:
    """Refuse to resume a run folder whose `run.json` records a different value of one option (named);
    options absent from `run` are not compared (the CLI checks all but the model before loading it)."""
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # a damaged run.json is rewritten; the studies and the prediction store keep their own keys
    given = json.loads(json.dumps(run))  # compared as they are stored (tuples become lists)
    for key, flag in _RUN_FLAGS.items():
        if key in stored and key in given and stored[key] != given[key]:
            have, want = stored[key], given[key]
            if key == "budget":
                have, want = (
                    (have.get("name"), want["name"])
                    if have.get("name") != want["name"]
                    else ("a different definition", "this version's")
                )
            raise LensSteerError(
                f"run folder {path.parent} was started with {flag} {have!r}, not {want!r}; re-run with the same "
                "options to resume it, or use another --out"
            )
