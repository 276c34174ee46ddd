"""The main job: baseline -> ISV search per axis -> SVE and merged baseline -> test-split, OOD and MMLU
evaluation with paired tests and matched random controls -> sweep and geometry -> `results.json`.

Every stage is resumable: the Optuna studies live in one storage, contrastive activations in an on-disk
cache, and every BBQ evaluation's predictions in a content-keyed store (`predictions/`), so re-running
the same command continues where it stopped and repeats no finished work."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES
from lens_steer.errors import LensSteerError
from lens_steer.files import write_json
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.pipeline.budgets import (
    Budget,
    check_same_run,
    check_study_options,
    default_baselines,
    fit_layers,
    run_folder_lock,
)
from lens_steer.pipeline.stages import Say, geometry_stage, ood_stage, sweep_stage
from lens_steer.version import __version__


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
    report: Callable[[Any, Path], Any] | None = None,
    load_original: Callable[[], HookedModel] | None = None,
    ground_truth_run: str | Path | None = None,
) -> dict[str, Any]:
    """Run the whole study into `out_dir` and return (and write) `results.json`'s content; `report` (e.g.
    `lens_steer.report.html.write_report`) is then called with the typed results and the folder.

    `protocol`: how each axis's vector is chosen, "sve-v1" (the Optuna search) or "v2" (the later paper's selection,
    lens_steer.pipeline.v2_stage); `splits`: "ours" or "v2" (the later paper's exact files; needs protocol v2).
    `baselines`: the debiasing baselines judged beside the vectors (default: `default_baselines(budget)`); `finetune`
    needs `load_base`, a loader of a fresh copy of the model; `load_original` loads the model a fine-tuned one came
    from (an organism's base model), which adds the `model_diff` kind to the search.

    `organism`: the card of a bias model organism (`lens_steer.methods.organism.build.read_card`) when `model` is one;
    the results then gain a ground-truth section (planted vs clean axes, verdicts per method).

    The folder is locked while the run writes it (`run_folder_lock`); re-running the same call resumes it,
    one with a different model, budget, axes, seed or scoring is refused."""
    with run_folder_lock(out_dir):
        return _reproduce(
            model,
            budget,
            out_dir,
            axes=axes,
            storage=storage,
            data_root=data_root,
            seed=seed,
            scoring=scoring,
            say=say,
            organism=organism,
            protocol=protocol,
            splits=splits,
            baselines=default_baselines(budget, organism is not None) if baselines is None else tuple(baselines),
            load_base=load_base,
            report=report,
            load_original=load_original,
            ground_truth_run=ground_truth_run,
        )


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
    report: Callable[[Any, Path], Any] | None = None,
    load_original: Callable[[], HookedModel] | None = None,
    ground_truth_run: str | Path | None = None,
) -> dict[str, Any]:
    from lens_steer.forward.questions import DEFAULT_SCORING
    from lens_steer.methods.isv import Isv
    from lens_steer.methods.search.run import run_isv_search
    from lens_steer.methods.search.space import SearchConfig, SearchSpace
    from lens_steer.methods.search.storage import default_storage, redact_url
    from lens_steer.pipeline.evaluate import evaluate_ensembles
    from lens_steer.pipeline.evaluation_config import EnsembleConfig
    from lens_steer.pipeline.ground_truth import ground_truth

    check_study_options(protocol, splits, baselines, axes)
    borrowed_ground_truth(ground_truth_run)  # a run without a ground truth is refused before anything runs
    if "finetune" in baselines and load_base is None:
        raise LensSteerError(
            "the finetune baseline needs load_base, a loader of a fresh copy of the model (the CLI passes one)"
        )
    say = say or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n_layers = int(model.cfg.n_layers)
    scoring = scoring or DEFAULT_SCORING
    own_storage = storage is None  # the folder's own database: this (locked) run is its only worker
    storage = storage or default_storage(out)
    space_kwargs: dict[str, Any] = {"num_sents": budget.num_sents}
    if load_original is not None:  # a fine-tuned model with its base at hand: the model difference is a kind too
        space_kwargs["kinds"] = (*SearchSpace().kinds, "model_diff")
    if budget.corpora is not None:
        space_kwargs["corpora"] = budget.corpora
    layers = fit_layers(budget, n_layers)
    if layers is not None:
        space_kwargs["layers"] = layers
    config = SearchConfig(
        space=SearchSpace(**space_kwargs),
        n_trials=budget.trials + (1 if load_original is not None else 0),
        objective="ambig_guarded",  # pooled accuracy rewards "unknown" everywhere; this one guards the reading
        limit=budget.val_limit,
        seed=seed,
        scoring=scoring,
        chunk_size=max(4, budget.val_limit // 2),
        tpe_startup_trials=budget.tpe_startup + (1 if load_original is not None else 0),
        pruner_startup_trials=max(2, budget.tpe_startup),
    )
    run = {
        "model": model_identity(model).name,
        "budget": budget.to_json(),
        "axes": list(axes),
        "seed": seed,
        "scoring": scoring,
        "protocol": protocol,
        "splits": splits,
        "baselines": list(baselines),
    }
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
        isvs, isv_summary = v2_isvs(
            model,
            axes,
            out,
            splits=splits,
            val_limit=budget.val_limit,
            test_limit=budget.test_limit,
            max_pairs=max_pairs,
            scoring=scoring,
            seed=seed,
            n_boot=budget.n_boot,
            data_root=data_root,
            say=say,
        )
        say("merged-datasets vector from every axis's v2 pairs")
        merged = v2_merged_vector(model, isvs, splits=splits, max_pairs=max_pairs, data_root=data_root)
    for k, axis in enumerate(axes if protocol == "sve-v1" else (), 1):
        say(f"[{k}/{len(axes)}] ISV search: {axis} ({config.n_trials} trials)")

        def progress(rep: Any, axis: str = axis) -> None:
            best = "none" if rep.best_value is None else f"{rep.best_value:.3f}"
            say(
                f"    {axis}: trial {rep.finished} of {rep.n_trials} ({rep.state.lower()}, {rep.seconds:.0f}s), best "
                f"so far {best}"
            )

        # each axis's study samples its own trials (the same seed everywhere would propose identical parameters); its
        # validation items are chosen by a seed of their own (the same per-axis value as before the two were separated)
        axis_seed = seed * 1000 + AXIS_NAMES.index(axis)
        axis_config = dataclasses.replace(config, seed=axis_seed, data_seed=axis_seed)
        res = run_isv_search(
            model,
            axis,
            axis_config,
            out / "isv" / axis,
            storage=storage,
            data_root=data_root,
            cache_dir=out / "activations",
            progress=progress,
            sole_worker=own_storage,
            base_loader=load_original,
        )
        isvs.append(res)
        isv_summary[axis] = {
            "study": res.study_name,
            "best_value": res.value,
            "params": res.params,
            "coeff": res.coeff if res.params is not None else None,
            "n_trials": res.n_trials,
            "history": _history(storage, res.study_name),
            "dir": str(Path("isv") / axis),
            "baseline": res.baseline,
            "chosen": res.summary.get("chosen") if res.summary else None,
            "by_kind": res.summary.get("by_kind") if res.summary else None,
        }

    lap("isv_search" if protocol == "sve-v1" else "v2_protocol")
    generated = ood_stage(out, seed, data_root, say)
    ens_config = EnsembleConfig(
        coeffs=budget.ens_coeffs,
        kinds=budget.ens_kinds,
        val_limit=budget.ens_val_limit,
        test_limit=budget.test_limit,
        scoring=scoring,
        seed=seed,
        n_boot=budget.n_boot,
        control_seeds=budget.control_seeds,
        mmlu_items=budget.mmlu_items,
        ood=True,
        ood_source="mixed",
        generated_dir=str(generated),
        bbq_source=config.bbq_source if protocol == "sve-v1" else "official",
        merged_method="mean_diff",
        store_dir=str(out),
        baselines=tuple(baselines),
        splits=splits,
        kind_entries=organism is not None,  # the ground truth's class x axis table
    )
    say(
        "ensembles: SVE, merged baseline, test split, random controls, OOD, MMLU"
        + (f"; baselines {', '.join(baselines)}" if baselines else "")
    )
    ensemble = evaluate_ensembles(
        model,
        isvs,
        ens_config,
        out / "ensemble",
        data_root=data_root,
        progress=lambda m: say(f"    {m}"),
        load_base=load_base,
        merged=merged,
    )
    lap("ensembles_and_evaluation")

    say(f"layer sweep ({axes[0]})")
    sweep = sweep_stage(model, axes[0], budget, scoring, out, data_root, seed)
    lap("layer_sweep")
    say("geometry: axis x axis cosine similarity")
    geometry = geometry_stage(model, axes, budget, out, data_root)
    lap("geometry")

    from lens_steer.pipeline.results import (
        CAPABILITY_METRICS,
        Capability,
        GeometryStage,
        IsvSummary,
        Meta,
        Results,
        SweepStage,
    )
    from lens_steer.pipeline.results_entries import EnsembleResults

    typed_ensemble = EnsembleResults.from_json(ensemble)
    org = (
        {k: organism[k] for k in ("name", "plant", "clean", "weights_sha256", "recipe") if k in organism}
        if organism is not None
        else None
    )
    results = Results(
        meta=Meta(
            model=model_identity(model).name,
            budget=budget.name,
            seconds=round(time.perf_counter() - started, 1),
            stage_seconds=stage_seconds,
            lens_steer_version=__version__,
            scoring=scoring,
            prompt_format=ens_config.prompt_format,
            split_seed=ens_config.split_seed,
            storage=redact_url(storage),
            bias_variant="lm_eval",
            budget_detail=budget.to_json(),
            organism=org,
            protocol=protocol,
            splits=splits,
        ),
        capability={
            a: Capability({k: row.baseline[k] for k in CAPABILITY_METRICS}, row.n)
            for a, row in typed_ensemble.in_distribution.items()
        },
        isv={a: IsvSummary.from_json(s, f"isv.{a}") for a, s in isv_summary.items()},
        ensemble=typed_ensemble,
        sweep=SweepStage.from_json(sweep),
        geometry=GeometryStage.from_json(geometry),
        ground_truth=ground_truth(typed_ensemble, isv_summary, organism)
        if organism is not None
        else borrowed_ground_truth(ground_truth_run),
    )
    saved = results.to_json()
    write_json(out / "results.json", saved)
    if report is not None:
        report(results, out)
    return saved


def _history(storage: str, study_name: str) -> list[float | None]:
    """Objective values of the study's finished trials in order (None for pruned ones)."""
    import optuna

    from lens_steer.methods.search.storage import open_storage
    from lens_steer.methods.search.workers import trial_score

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return [
        trial_score(t) if t.state == optuna.trial.TrialState.COMPLETE else None
        for t in study.get_trials(deepcopy=False)
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]


def borrowed_ground_truth(run: str | Path | None) -> Any:
    """The ground-truth section of a finished organism run (`run/results.json`), marked with where it came from;
    None without a run; a one-line error when the run is not finished or holds no ground truth."""
    if run is None:
        return None
    import dataclasses as dc

    from lens_steer.errors import ResultsError
    from lens_steer.pipeline.results import Results

    path = Path(run) / "results.json"
    try:
        found = Results.from_json(json.loads(path.read_text(encoding="utf-8"))).ground_truth
    except (OSError, ValueError) as e:
        raise ResultsError(
            f"--ground-truth {run}: no finished run there ({type(e).__name__}); run "
            "`lens-steer reproduce --model smollm2-organism` into it first"
        ) from None
    if found is None:
        raise ResultsError(
            f"--ground-truth {run}: that run has no ground truth (it was not on a bias model organism); "
            "give a run of `lens-steer reproduce --model smollm2-organism`"
        )
    return dc.replace(found, organism={**found.organism, "run": str(run)})
