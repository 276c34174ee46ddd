"""The main job: baseline -> ISV search per axis -> SVE and merged baseline -> test-split, OOD and MMLU
evaluation with paired tests and matched random controls -> sweep and geometry -> `results.json`.

Every stage is resumable: the Optuna studies live in one storage, contrastive activations in an on-disk
cache, and every BBQ evaluation's predictions in a content-keyed store (`predictions/`), so re-running
the same command continues where it stopped and repeats no finished work.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lens_steer import __version__
from lens_steer.axes import AXIS_NAMES, OOD_CATEGORIES
from lens_steer.errors import LensSteerError
from lens_steer.files import write_json
from lens_steer.models import HookedModel, model_identity

Say = Callable[[str], None]


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
    "smoke": Budget("smoke", trials=3, num_sents=(16, 32, 16), val_limit=8, test_limit=12, ens_val_limit=8,
                    ens_coeffs=(-2.0, 2.0), ens_kinds=("sve",), control_seeds=(1,), mmlu_items=16, layers=((12,), (18,), (24,)),
                    corpora=None, tpe_startup=3, sweep_layers=(12, 18, 24), sweep_coeffs=(-4.0, 4.0), sweep_limit=12,
                    geometry_num_sents=16, n_boot=500),
    # a first look with intervals worth reading (about an hour on 2 CPU cores; see the README for the measured time)
    "small": Budget("small", trials=8, num_sents=(32, 96, 32), val_limit=32, test_limit=64, ens_val_limit=32,
                    ens_coeffs=(-4.0, -2.0, 2.0, 4.0), ens_kinds=("sve", "sve_norm"), control_seeds=(1,), mmlu_items=64, layers=None,
                    corpora=None, tpe_startup=4, sweep_layers=(6, 10, 14, 18, 22, 26), sweep_coeffs=(-4.0, -2.0, 2.0, 4.0),
                    sweep_limit=32, geometry_num_sents=32, n_boot=1000),
    # the paper's budget: 50 trials per axis, 100..500 prompts (a GPU is recommended)
    "paper": Budget("paper", trials=50, num_sents=(100, 500, 50), val_limit=400, test_limit=2000, ens_val_limit=200,
                    ens_coeffs=tuple(float(c) for c in range(-5, 6)), ens_kinds=("sve", "sve_norm", "sve_weighted"), control_seeds=(1, 2, 3), mmlu_items=2000, layers=None,
                    corpora=None, tpe_startup=10, sweep_layers=tuple(range(2, 30, 2)), sweep_coeffs=(-4.0, -2.0, -1.0, 1.0, 2.0, 4.0),
                    sweep_limit=200, geometry_num_sents=200, n_boot=1000),
}


PROTOCOLS: tuple[str, ...] = ("sve-v1", "v2")  # how the per-axis vectors are chosen: the Optuna search, or the later paper's selection
SPLITS: tuple[str, ...] = ("ours", "v2")  # our seeded splits, or the later paper's exact files (bbq_v2_splits)
# the debiasing baselines judged beside the vectors when --baselines is not given. prompting costs about one plain
# evaluation per target; self-debias-schick about 18 (measured: 12 BBQ items on SmolLM2-135M, 1 thread, 5.6 s plain,
# 6.0 s prompting, 100 s self-debias-schick: seven prompts per option, a full-vocabulary distribution per token), which
# would about double the smoke and small budgets, so they judge prompting by default and take the others by --baselines
DEFAULT_BASELINES: dict[str, tuple[str, ...]] = {"smoke": ("prompting",), "small": ("prompting",),
                                                 "paper": ("prompting", "self-debias-schick", "self-debias", "finetune")}  # fmt: skip


def default_baselines(budget: Budget) -> tuple[str, ...]:
    """The baselines a budget judges unless told otherwise (prompting alone outside the paper budget)."""
    return DEFAULT_BASELINES.get(budget.name, ("prompting",))


def check_study_options(protocol: str, splits: str, baselines: Sequence[str], axes: Sequence[str]) -> None:
    """Refuse option combinations the study cannot run, each with a one-line error."""
    from lens_steer.baselines import BASELINES
    from lens_steer.scoring import check_choice

    check_choice(protocol, PROTOCOLS, "--protocol")
    check_choice(splits, SPLITS, "--splits")
    for b in baselines:
        check_choice(b, BASELINES, "baseline")
    if splits == "v2" and protocol != "v2":
        raise LensSteerError("--splits v2 needs --protocol v2: the Optuna search (sve-v1) reads our seeded splits, whose train items may be the v2 files' test rows")
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


def _fit_layers(budget: Budget, n_layers: int) -> tuple[tuple[int, ...], ...] | None:
    """Budget layer candidates scaled to the model's depth (the budgets are written for 30 layers)."""
    if budget.layers is None:
        return None
    return tuple(tuple(min(n_layers - 1, round(layer * n_layers / 30)) for layer in band) for band in budget.layers)


LOCK_NAME = ".lens_steer.lock"
_HELD: set[Path] = set()  # run folders this process holds


@contextmanager
def run_folder_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold `out_dir/.lens_steer.lock` while a run writes the folder (re-entrant within a process).

    An advisory `flock`, released by the operating system when the holder exits, SIGKILL included, so a
    killed run never leaves a stale lock; a second process gets a one-line error naming the lock and its holder."""
    out = Path(out_dir).resolve()
    if out in _HELD:
        yield out
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise LensSteerError(f"run folder {out} is in use: {path} is locked by {holder}; wait for that run to finish, or use another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"lens-steer pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _HELD.add(out)
    try:
        yield out
    finally:
        _HELD.discard(out)
        os.close(fd)  # releases the lock


_RUN_FLAGS = {"model": "--model", "budget": "--budget", "axes": "--axes", "seed": "--seed", "scoring": "--scoring", "protocol": "--protocol", "splits": "--splits"}


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
                have, want = (have.get("name"), want["name"]) if have.get("name") != want["name"] else ("a different definition", "this version's")
            raise LensSteerError(f"run folder {path.parent} was started with {flag} {have!r}, not {want!r}; re-run with the same options to resume it, or use another --out")


def reproduce(
    model: HookedModel,
    budget: Budget,
    out_dir: str | Path,
    *,
    axes: Sequence[str] = AXIS_NAMES,
    storage: str | None = None,
    data_root: str | Path | None = None,
    seed: int = 0,
    scoring: str | None = None,
    say: Say | None = None,
    organism: dict[str, Any] | None = None,
    protocol: str = "sve-v1",
    splits: str = "ours",
    baselines: Sequence[str] | None = None,
    load_base: Callable[[], HookedModel] | None = None,
) -> dict[str, Any]:
    """Run the whole study into `out_dir` and return (and write) `results.json`'s content.

    `protocol`: how each axis's vector is chosen, "sve-v1" (the Optuna search) or "v2" (the later paper's selection,
    lens_steer.pipeline.v2_stage); `splits`: "ours" or "v2" (the later paper's exact files; needs protocol v2).
    `baselines`: the debiasing baselines judged beside the vectors (default: `default_baselines(budget)`); `finetune`
    needs `load_base`, a loader of a fresh copy of the model.

    `organism`: the card of a bias model organism (`lens_steer.organism_build.read_card`) when `model` is one; the
    results then gain a ground-truth section (planted vs clean axes, verdicts per method).

    The folder is locked while the run writes it (`run_folder_lock`); re-running the same call resumes it,
    one with a different model, budget, axes, seed or scoring is refused."""
    with run_folder_lock(out_dir):
        return _reproduce(model, budget, out_dir, axes=axes, storage=storage, data_root=data_root, seed=seed, scoring=scoring, say=say, organism=organism,
                          protocol=protocol, splits=splits, baselines=default_baselines(budget) if baselines is None else tuple(baselines), load_base=load_base)  # fmt: skip


def _reproduce(
    model: HookedModel,
    budget: Budget,
    out_dir: str | Path,
    *,
    axes: Sequence[str],
    storage: str | None,
    data_root: str | Path | None,
    seed: int,
    scoring: str | None,
    say: Say | None,
    organism: dict[str, Any] | None = None,
    protocol: str = "sve-v1",
    splits: str = "ours",
    baselines: Sequence[str] = (),
    load_base: Callable[[], HookedModel] | None = None,
) -> dict[str, Any]:
    from lens_steer.ensemble import EnsembleConfig, evaluate_ensembles
    from lens_steer.isv import Isv
    from lens_steer.scoring import DEFAULT_SCORING
    from lens_steer.search.run import run_isv_search
    from lens_steer.search.space import SearchConfig, SearchSpace
    from lens_steer.search.storage import default_storage, redact_url

    check_study_options(protocol, splits, baselines, axes)
    if "finetune" in baselines and load_base is None:
        raise LensSteerError("the finetune baseline needs load_base, a loader of a fresh copy of the model (the CLI passes one)")
    say = say or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n_layers = int(model.cfg.n_layers)
    scoring = scoring or DEFAULT_SCORING
    own_storage = storage is None  # the folder's own database: this (locked) run is its only worker
    storage = storage or default_storage(out)
    space_kwargs: dict[str, Any] = {"num_sents": budget.num_sents}
    if budget.corpora is not None:
        space_kwargs["corpora"] = budget.corpora
    layers = _fit_layers(budget, n_layers)
    if layers is not None:
        space_kwargs["layers"] = layers
    config = SearchConfig(space=SearchSpace(**space_kwargs), n_trials=budget.trials, limit=budget.val_limit, seed=seed,
                          scoring=scoring, chunk_size=max(4, budget.val_limit // 2), tpe_startup_trials=budget.tpe_startup,
                          pruner_startup_trials=max(2, budget.tpe_startup))  # fmt: skip
    run = {"model": model_identity(model).name, "budget": budget.to_json(), "axes": list(axes), "seed": seed, "scoring": scoring, "protocol": protocol,
           "splits": splits, "baselines": list(baselines)}  # fmt: skip
    check_same_run(out / "run.json", run)
    write_json(out / "run.json", run)

    stage_seconds: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stage_seconds[stage] = round(now - mark, 1)
        mark = now

    isvs: list[Isv] = []
    isv_summary: dict[str, Any] = {}
    merged = None
    if protocol == "v2":
        from lens_steer.pipeline.v2_stage import v2_isvs, v2_max_pairs, v2_merged_vector

        max_pairs = v2_max_pairs(budget.name, budget.num_sents)
        isvs, isv_summary = v2_isvs(model, axes, out, splits=splits, val_limit=budget.val_limit, test_limit=budget.test_limit, max_pairs=max_pairs,
                                    scoring=scoring, seed=seed, n_boot=budget.n_boot, data_root=data_root, say=say)  # fmt: skip
        say("merged-datasets vector from every axis's v2 pairs")
        merged = v2_merged_vector(model, isvs, splits=splits, max_pairs=max_pairs, data_root=data_root)
    for k, axis in enumerate(axes if protocol == "sve-v1" else (), 1):
        say(f"[{k}/{len(axes)}] ISV search: {axis} ({budget.trials} trials)")

        def progress(rep: Any, axis: str = axis) -> None:
            best = "none" if rep.best_value is None else f"{rep.best_value:.3f}"
            say(f"    {axis}: trial {rep.finished} of {rep.n_trials} ({rep.state.lower()}, {rep.seconds:.0f}s), best so far {best}")

        # each axis's study samples its own trials (the same seed everywhere would propose identical parameters); its
        # validation items are chosen by a seed of their own (the same per-axis value as before the two were separated)
        axis_seed = seed * 1000 + AXIS_NAMES.index(axis)
        axis_config = dataclasses.replace(config, seed=axis_seed, data_seed=axis_seed)
        res = run_isv_search(model, axis, axis_config, out / "isv" / axis, storage=storage, data_root=data_root,
                             cache_dir=out / "activations", progress=progress, sole_worker=own_storage)  # fmt: skip
        isvs.append(res)
        isv_summary[axis] = {
            "study": res.study_name, "best_value": res.value, "params": res.params, "coeff": res.coeff, "n_trials": res.n_trials,
            "history": _history(storage, res.study_name), "dir": str(Path("isv") / axis), "baseline": res.baseline,
        }  # fmt: skip

    lap("isv_search" if protocol == "sve-v1" else "v2_protocol")
    generated = ood_stage(out, seed, data_root, say)
    ens_config = EnsembleConfig(coeffs=budget.ens_coeffs, kinds=budget.ens_kinds, val_limit=budget.ens_val_limit, test_limit=budget.test_limit, scoring=scoring,
                                seed=seed, n_boot=budget.n_boot, control_seeds=budget.control_seeds, mmlu_items=budget.mmlu_items,
                                ood=True, ood_source="mixed", generated_dir=str(generated), bbq_source=config.bbq_source if protocol == "sve-v1" else "official",
                                merged_method="mean_diff", store_dir=str(out), baselines=tuple(baselines), splits=splits)  # fmt: skip
    say("ensembles: SVE, merged baseline, test split, random controls, OOD, MMLU" + (f"; baselines {', '.join(baselines)}" if baselines else ""))
    ensemble = evaluate_ensembles(model, isvs, ens_config, out / "ensemble", data_root=data_root, progress=lambda m: say(f"    {m}"), load_base=load_base, merged=merged)
    lap("ensembles_and_evaluation")

    say(f"layer sweep ({axes[0]})")
    sweep = sweep_stage(model, axes[0], budget, scoring, out, data_root, seed)
    lap("layer_sweep")
    say("geometry: axis x axis cosine similarity")
    geometry = geometry_stage(model, axes, budget, out, data_root)
    lap("geometry")

    from lens_steer.pipeline.results import CAPABILITY_METRICS, Capability, EnsembleResults, GeometryStage, IsvSummary, Meta, Results, SweepStage
    from lens_steer.report.html import write_report

    typed_ensemble = EnsembleResults.from_json(ensemble)
    org = {k: organism[k] for k in ("name", "plant", "clean", "weights_sha256", "recipe") if k in organism} if organism is not None else None
    results = Results(
        meta=Meta(model=model_identity(model).name, budget=budget.name, seconds=round(time.perf_counter() - started, 1), stage_seconds=stage_seconds,
                  lens_steer_version=__version__, scoring=scoring, prompt_format=ens_config.prompt_format, split_seed=ens_config.split_seed,
                  storage=redact_url(storage), bias_variant="lm_eval", budget_detail=budget.to_json(), organism=org, protocol=protocol, splits=splits),
        capability={a: Capability({k: row.baseline[k] for k in CAPABILITY_METRICS}, row.n) for a, row in typed_ensemble.in_distribution.items()},
        isv={a: IsvSummary.from_json(s, f"isv.{a}") for a, s in isv_summary.items()},
        ensemble=typed_ensemble,
        sweep=SweepStage.from_json(sweep),
        geometry=GeometryStage.from_json(geometry),
        ground_truth=_ground_truth(ensemble, isv_summary, organism) if organism is not None else None,
    )  # fmt: skip
    saved = results.to_json()
    write_json(out / "results.json", saved)
    write_report(results, out)
    return saved


def _ground_truth(ensemble: dict[str, Any], isv_summary: dict[str, Any], organism: dict[str, Any]) -> dict[str, Any]:
    from lens_steer.ground_truth import ground_truth

    return ground_truth(ensemble, isv_summary, organism)


def ood_stage(out: Path, seed: int, data_root: str | Path | None, say: Say) -> Path:
    """The out-of-distribution BBQ categories generated from the official templates into `out/bbq_generated`
    (kept while its `inputs.json` records the same seed, categories, templates and code version); that folder."""
    from lens_steer.data.bbq_generate import write_generated
    from lens_steer.pipeline.stage_cache import data_inputs, read_stage, write_stage

    generated = out / "bbq_generated"
    key = generated / "inputs.json"
    inputs = {"categories": list(OOD_CATEGORIES), "seed": seed, "data": data_inputs(data_root, ["bbq"]), "lens_steer_version": __version__}
    if read_stage(key, inputs) is None or not all(_readable_bbq(generated / f"{c}.jsonl") for c in OOD_CATEGORIES):
        say("generating the out-of-distribution BBQ categories from the official templates")
        key.unlink(missing_ok=True)  # a run killed while generating leaves no key behind mixed files
        paths = write_generated(OOD_CATEGORIES, generated, seed=seed, data_root=data_root)
        write_stage(key, inputs, {"files": sorted(p.name for p in paths.values())})
    return generated


def _readable_bbq(path: Path) -> bool:
    """Whether a generated BBQ file is there and reads whole (a damaged one is generated again)."""
    from lens_steer.data.bbq import load_bbq_file
    from lens_steer.errors import DataError

    try:
        return bool(load_bbq_file(path, source="generated"))
    except DataError:
        return False


def _history(storage: str, study_name: str) -> list[float | None]:
    """Objective values of the study's finished trials in order (None for pruned ones)."""
    from lens_steer.search.storage import open_storage

    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return [t.value if t.state == optuna.trial.TrialState.COMPLETE else None for t in study.get_trials(deepcopy=False)
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]  # fmt: skip


def sweep_stage(model: HookedModel, axis: str, budget: Budget, scoring: str, out: Path, data_root: str | Path | None, seed: int) -> dict[str, Any]:
    """A small layer x coefficient sweep of one axis (mean_diff, so coefficients are in the search's units);
    cached in sweep/sweep.json, keyed by the model, the budget's sweep fields, scoring, seed and data."""
    from lens_steer.files import atomic_write_text
    from lens_steer.pipeline.stage_cache import cached_stage, data_inputs, model_inputs
    from lens_steer.plots import sweep_heatmap, write_figure
    from lens_steer.sweep import sweep_axis

    n = int(model.cfg.n_layers)
    layers = sorted({min(n - 1, round(layer * n / 30)) for layer in budget.sweep_layers})
    inputs = {"model": model_inputs(model), "axis": axis, "layers": layers, "coeffs": list(budget.sweep_coeffs), "method": "mean_diff", "scoring": scoring,
              "num_sents": budget.geometry_num_sents, "limit": budget.sweep_limit, "n_boot": budget.n_boot, "seed": seed,
              "data": data_inputs(data_root, ["bbq", "prompt_corpora"])}  # fmt: skip

    def compute() -> dict[str, Any]:
        res = sweep_axis(model, axis, layers, list(budget.sweep_coeffs), method="mean_diff", scoring=scoring, num_sents=budget.geometry_num_sents,
                         limit=budget.sweep_limit, data_root=data_root, n_boot=budget.n_boot, seed=seed)  # fmt: skip
        atomic_write_text(out / "sweep" / "sweep.csv", res.to_csv())
        write_figure(sweep_heatmap(res.rows, res.baseline, title=f"{axis}: validation {res.metric} by layer x coefficient"), out / "sweep" / "sweep.html")
        return {"axis": axis, "layers": res.layers, "coeffs": res.coeffs, "metric": res.metric, "baseline": res.baseline, "rows": res.rows, "config": res.config}

    return cached_stage(out / "sweep" / "sweep.json", inputs, compute)


def geometry_stage(model: HookedModel, axes: Sequence[str], budget: Budget, out: Path, data_root: str | Path | None) -> dict[str, Any]:
    """Axis x axis cosine similarity of per-axis mean-difference vectors at the layer 2/3 deep; cached in
    geometry/geometry.json, keyed by the model, axes, layer, pair count and prompt corpora."""
    from lens_steer.geometry import axis_cosines, axis_vectors, random_cosine_reference, save_axis_vectors
    from lens_steer.pipeline.stage_cache import cached_stage, data_inputs, model_inputs

    layer = int(model.cfg.n_layers) * 2 // 3
    inputs = {"model": model_inputs(model), "axes": list(axes), "layer": layer, "method": "mean_diff", "num_sents": budget.geometry_num_sents,
              "persona": 0, "template": 0, "data": data_inputs(data_root, ["prompt_corpora"])}  # fmt: skip

    def compute() -> dict[str, Any]:
        vectors = axis_vectors(model, list(axes), [layer], method="mean_diff", num_sents=budget.geometry_num_sents, data_root=data_root)
        save_axis_vectors(vectors, out / "geometry")
        names, cos = axis_cosines(vectors, layer)
        return {"layer": layer, "axes": names, "cosine": cos.tolist(), "random_reference": random_cosine_reference(int(model.cfg.d_model))["mean_abs"],
                "num_sents": budget.geometry_num_sents, "method": "mean_diff", "persona": 0, "template": 0}  # fmt: skip

    return cached_stage(out / "geometry" / "geometry.json", inputs, compute)
