"""One axis's ISV search end to end: open, join or resume its study, run trials until the budget is met, and write
the ISV's files (isv.safetensors, study.json, Optuna's figures)."""

from __future__ import annotations

import collections
import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lens_steer.axes import Axis, get_axis
from lens_steer.errors import LensSteerError, StudyError
from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.consistency import trials_consistency_correlation
from lens_steer.extract.pair_sources import BBQ_CORPORA, PairSource, available_pairs
from lens_steer.files import atomic_write_text, write_json
from lens_steer.methods.isv import Isv
from lens_steer.methods.search.kinds import default_params, trial_values
from lens_steer.methods.search.objective import IsvObjective, study_pair_source
from lens_steer.methods.search.space import SearchConfig, SearchSpace
from lens_steer.methods.search.storage import (
    default_storage,
    first_difference,
    first_line,
    open_storage,
    open_study,
    redact_url,
    storage_exists,
)
from lens_steer.methods.search.workers import (
    FINISHED,
    HEARTBEAT_ATTR,
    Objective,
    TrialProgress,
    best_trial,
    fail_orphaned_trials,
    run_trials,
    trial_score,
)
from lens_steer.model.chat import system_prompt_mode
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.steering.interventions import Additive, Intervention, load_intervention
from lens_steer.steering.vectors import SteeringVector, load_vector


def default_study_name(model: HookedModel, axis: Axis) -> str:
    """'isv-<model>-<axis>'."""
    return f"isv-{model_identity(model).name.replace('/', '_')}-{axis.name}"


def check_corpora(
    space: SearchSpace, data_root: str | Path | None = None, source: PairSource | None = None, tokenizer: Any = None
) -> None:
    """Raise a one-line StudyError if a prompt corpus is shorter than the largest num_sents (or the axis's BBQ
    train pairs fewer than the smallest: an axis with fewer than the largest gives all it has)."""
    for corpus in space.corpora:
        size = available_pairs(corpus, source, data_root, tokenizer)
        if corpus in BBQ_CORPORA:
            if size < space.num_sents[0]:
                axis = source.axis if source else "?"
                raise StudyError(
                    f"search space: num_sents low {space.num_sents[0]} exceeds the {size} BBQ train pairs of axis "
                    f"{axis}; lower it or drop {corpus}"
                )
        elif size < space.num_sents[1]:
            raise StudyError(
                f"search space: num_sents high {space.num_sents[1]} exceeds corpus {corpus!r} ({size} prompts); "
                "lower it or drop the corpus"
            )


def run_isv_search(
    model: HookedModel,
    axis: str | Axis,
    config: SearchConfig | None,
    out_dir: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    n_trials: int | None = None,
    objective: Objective | None = None,
    progress: TrialProgress | None = None,
    given: Mapping[str, Any] | None = None,
    sole_worker: bool = False,
    base_loader: Callable[[], HookedModel] | None = None,
) -> Isv:
    """Search one axis's ISV: open/join/resume the study, run trials until it holds `config.n_trials`
    finished trials, then write the ISV outputs into `out_dir`. `storage` defaults to
    `sqlite:///<out_dir>/optuna.db`; "journal:<file>" or any SQLAlchemy URL also work.
    `config` may be None only with `resume` (the stored configuration is used); `n_trials` overrides
    the configured budget. With `resume`, `given` holds the configuration fields the caller set
    explicitly (JSON values): equal to the stored ones they are accepted, a different one is refused.
    `sole_worker`: no other process uses this storage (e.g. a locked run folder's own database), so a
    running trial left by a killed worker is failed and retried at once instead of after the heartbeat grace.
    `objective` replaces the BBQ objective (tests, custom objectives). `base_loader` gives the base model of a
    fine-tuned one (the `model_diff` kind needs it)."""
    ax = axis if isinstance(axis, Axis) else get_axis(axis)
    out = Path(out_dir)
    url = storage if storage is not None else default_storage(out)
    label = redact_url(url)
    if resume and not storage_exists(url):
        raise StudyError(f"cannot resume: storage {label} does not exist; run without --resume to start a study")
    if config is None and not resume:
        raise StudyError("a new search needs a SearchConfig; pass config, or resume=True to use the stored one")
    if config is not None:
        check_corpora(
            config.space.resolve(int(model.cfg.n_layers)), data_root, study_pair_source(ax, config), model.tokenizer
        )
    if storage is None:  # the default storage lives in the run folder
        out.mkdir(parents=True, exist_ok=True)
    store = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    name = study_name or default_study_name(model, ax)
    study, used = open_study(store, name, config=config, resume=resume, storage_label=label)
    if resume and used is not None and given:
        check_resume_options(used, given, name)
    if sole_worker:
        fail_orphaned_trials(study)
    if used is None:
        raise StudyError(f"study {name!r} has no stored lens_steer configuration; pass a SearchConfig to continue it")
    if n_trials is not None:
        used = dataclasses.replace(used, n_trials=n_trials)
    space = used.space.resolve(int(model.cfg.n_layers))
    check_corpora(space, data_root, study_pair_source(ax, used), model.tokenizer)
    write_json(
        out / "config.json",
        {**used.to_json(), "axis": ax.name, "study": name, "storage": label, "model": model_identity(model).name},
    )
    cache = ActivationCache(
        model,
        space.all_layers,
        hook=used.hook,
        data_root=data_root,
        disk_dir=cache_dir,
        max_batch=used.max_batch,
        source=study_pair_source(ax, used),
    )
    isv = IsvObjective(
        model,
        ax,
        dataclasses.replace(used, space=space),
        cache=cache,
        data_root=data_root,
        baseline=_stored_baseline(study, used),
        base_loader=base_loader,
    )
    if objective is None and (used.objective == "ambig_guarded" or used.mmlu_weight > 0):
        _store_baseline(study, used, isv.baseline())
    started = time.time()
    run_trials(
        study,
        objective or isv,
        space,
        used.n_trials,
        seed=used.seed,
        tpe_startup_trials=used.tpe_startup_trials,
        progress=progress,
        first_stage=first_stage(space) if objective is None else (),
    )
    if objective is None and _stored_baseline(study, used) is None:
        _store_baseline(study, used, isv.baseline())
    return write_isv_outputs(study, isv, out, storage_label=label, worker_seconds=time.time() - started)


def check_resume_options(stored: SearchConfig, given: Mapping[str, Any], study_name: str) -> None:
    """Refuse (one line, naming the option) a resumed study's option whose value differs from the stored one."""
    have = stored.to_json()
    for field, value in given.items():
        if field == "n_trials":
            continue
        if field not in have:
            raise StudyError(
                f"cannot resume study {study_name!r}: {field!r} is not a search config field; valid: "
                f"{', '.join(sorted(have))}"
            )
        if have[field] != value:
            flag = "--" + field.replace("_", "-")
            what = (
                f"a different {flag} ({first_difference(have[field], value)})"
                if isinstance(value, Mapping) and isinstance(have[field], Mapping)
                else f"{flag} {value!r} (stored: {have[field]!r})"
            )
            raise StudyError(
                f"cannot resume study {study_name!r} with {what}; drop {flag} or give the stored value, or start a "
                "new --study"
            )


def _stored_baseline(study: optuna.Study, config: SearchConfig) -> dict[str, float] | None:
    found = study.user_attrs.get(f"baseline:{config.fingerprint()}")
    return dict(found) if found else None


def _store_baseline(study: optuna.Study, config: SearchConfig, base: Mapping[str, float]) -> None:
    study.set_user_attr(f"baseline:{config.fingerprint()}", dict(base))


def write_isv_outputs(
    study: optuna.Study,
    isv: IsvObjective,
    out_dir: str | Path,
    *,
    storage_label: str = "",
    worker_seconds: float | None = None,
) -> Isv:
    """Write the search's outputs into `out_dir`, atomically: `intervention.safetensors` (the best trial of any kind,
    when it beats doing nothing on validation; else none, and study.json says so), `isv.safetensors` (the best
    additive trial's vector, scaled to the mean contrast, with its params, coefficient and study in its provenance:
    what the ensembles average), `study.json` and the Optuna figures (HTML)."""
    out = Path(out_dir)
    best = best_trial(study)
    if best is None:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run more trials")
    baseline = isv.baseline()
    base_score = baseline.get("objective")
    best_score = trial_score(best)
    chosen_params = trial_params(best)
    beats = base_score is None or (best_score is not None and best_score > base_score)
    chosen_path = out / "intervention.safetensors"
    stamp = {"axis": isv.axis.name, "study": study.study_name, "config": isv.config.fingerprint()}
    chosen = None
    if beats:
        chosen = kept_or_built(
            chosen_path,
            {**stamp, "operation": "chosen", "trial": best.number, "value": best_score, "params": chosen_params},
            lambda: isv.intervention(chosen_params),
            isv.model,
        )
    else:
        chosen_path.unlink(missing_ok=True)
    by_kind: dict[str, Intervention] = {}
    for kind, info in best_by_kind(study).items():  # each kind's best trial: the class x axis table's entries
        by_kind[kind] = kept_or_built(
            out / "kinds" / f"{kind}.safetensors",
            {**stamp, "operation": "best_of_kind", "trial": info["trial"], "value": info["value"]},
            lambda info=info: isv.intervention(info["params"]),
            isv.model,
        )
    additive = best_trial(study, kind="additive")
    vec, vector_path, params = None, out / "isv.safetensors", None
    if additive is not None:
        params = trial_params(additive)
        kept = kept_file(vector_path, {**stamp, "trial": additive.number}, isv.model, vector=True)
        vec = kept if kept is not None else isv.vector(params)  # type: ignore[assignment]
        prov = {
            **dict(vec.metadata.provenance),
            "operation": "isv",
            "axis": isv.axis.name,
            "study": study.study_name,
            "storage": storage_label,
            "trial": additive.number,
            "params": params,
            "coeff": params["coeff"],
            "value": trial_score(additive),
            "beats_baseline": base_score is None or (trial_score(additive) or -1e9) > base_score,
            "objective": isv.config.objective,
            "config": isv.config.fingerprint(),
            "pair_source": isv.pair_source.to_json(),
        }
        vec = SteeringVector(dict(vec.directions), dataclasses.replace(vec.metadata, provenance=prov))
        if kept is None:
            vec.save(vector_path)
    ident = model_identity(isv.model)
    trials = study.get_trials(deepcopy=False)
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state in FINISHED and t.datetime_start and t.datetime_complete
    ]
    states = collections.Counter(t.state.name for t in trials)
    figures, skipped = write_figures(study, out)
    summary = {
        "study": study.study_name,
        "storage": storage_label,
        "model": ident.name,
        "axis": isv.axis.name,
        "system_prompt": system_prompt_mode(isv.model.tokenizer),  # how the persona system prompts reached the model
        "objective": isv.config.objective,
        "best_value": best_score,
        "best_trial": best.number,
        "best_params": chosen_params,
        "chosen": {
            "kind": chosen_params.get("kind", "additive"),
            "params": chosen_params,
            "value": best_score,
            "beats_baseline": beats,
            "intervention": chosen.describe() if chosen is not None else None,
            "file": chosen_path.name if chosen is not None else None,
        },
        "isv": {
            "params": params,
            "value": trial_score(additive) if additive is not None else None,
            "file": vector_path.name if vec is not None else None,
        },
        "by_kind": best_by_kind(study),
        "pareto_front": pareto_front(study),
        "best_user_attrs": {k: v for k, v in best.user_attrs.items() if k != HEARTBEAT_ATTR},
        "consistency_vs_objective": trials_consistency_correlation(trials),
        "baseline": baseline,
        "gain_over_baseline": best_score - base_score if base_score is not None and best_score is not None else None,
        "n_finished": states.get("COMPLETE", 0) + states.get("PRUNED", 0),
        "trial_states": dict(states),
        "n_validation_items": len(isv.items),
        "timing": {
            "mean_trial_seconds": sum(durations) / len(durations) if durations else None,
            "total_trial_seconds": sum(durations),
            "this_worker_seconds": worker_seconds,
        },
        "cache": {"hits": isv.cache.hits, "misses": isv.cache.misses, "pairs_read": isv.cache.pairs_read}
        if isv.cache
        else None,
        "vector": str(vector_path.name) if vec is not None else None,
        "figures": figures,
        "figures_skipped": skipped,
        "config": isv.config.to_json(),
    }
    write_json(out / "study.json", summary)
    return Isv(
        isv.axis.name,
        vec,
        float(params["coeff"]) if params is not None else 0.0,
        vector_path if vec is not None else None,
        study.study_name,
        params,
        trial_score(additive) if additive is not None else None,
        baseline,
        summary["n_finished"],
        summary,
        chosen=chosen,
        chosen_params=chosen_params,
        chosen_value=best_score,
        by_kind=by_kind,
    )


def kept_file(path: Path, stamp: Mapping[str, Any], model: HookedModel, *, vector: bool = False) -> Any:
    """The intervention (or vector) saved at `path` when its provenance carries every field of `stamp` (the same
    study, configuration and trial: a re-run of a finished search rebuilds nothing), else None."""
    if not path.is_file():
        return None
    try:
        found = load_vector(path, model) if vector else load_intervention(path, model)
    except LensSteerError:
        return None
    prov = found.metadata.provenance
    return (
        found if all(prov.get(k) == v for k, v in stamp.items() if k not in ("value", "params", "operation")) else None
    )


def kept_or_built(
    path: Path, stamp: Mapping[str, Any], build: Callable[[], Intervention], model: HookedModel
) -> Intervention:
    """`kept_file`'s intervention, or `build()` stamped with `stamp` and saved at `path`."""
    kept = kept_file(path, stamp, model)
    if kept is not None:
        return kept
    iv = with_provenance(build(), stamp)
    iv.save(path)
    return iv


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's params as the objective reads them: the kind's own names (e.g. `gated_layers`) back to the shared
    ones (`layers`), coefficients rounded to the grid's digits; trials before kinds are additive."""
    raw = dict(trial.params)
    kind = raw.pop("kind", "additive")
    out: dict[str, Any] = {"kind": kind}
    for name, value in raw.items():
        base = name.removeprefix(f"{kind}_")
        out[base] = round(float(value), 10) if base == "coeff" else value
    for name in ("corpus", "persona", "template", "method"):
        out.setdefault(name, None)
    return out


def best_by_kind(study: optuna.Study) -> dict[str, Any]:
    """Per intervention kind, its best complete trial's number, score and params."""
    out = {}
    kinds = {t.params.get("kind", "additive") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    for kind in sorted(kinds):
        t = best_trial(study, kind=kind)
        if t is not None:
            out[kind] = {"trial": t.number, "value": trial_score(t), "params": trial_params(t)}
    return out


def pareto_front(study: optuna.Study) -> list[dict[str, Any]] | None:
    """Under several objectives, the Pareto front's trials (number, values, params); None for one objective."""
    if len(study.directions) == 1:
        return None
    return [
        {"trial": t.number, "values": list(t.values), "ambig_guarded": trial_score(t), "params": trial_params(t)}
        for t in sorted(study.best_trials, key=lambda t: t.number)
    ]


def with_provenance(iv: Intervention, extra: Mapping[str, Any]) -> Intervention:
    """`iv` with `extra` added to its metadata's provenance."""
    meta = dataclasses.replace(iv.metadata, provenance={**iv.metadata.provenance, **extra})
    if isinstance(iv, Additive):
        return dataclasses.replace(iv, metadata=meta, vector=SteeringVector(dict(iv.vector.directions), meta))
    return dataclasses.replace(iv, metadata=meta)


def first_stage(space: SearchSpace) -> list[dict[str, Any]]:
    """The staged search's first stage: one trial per intervention kind at its default point (`kinds.default_params`),
    as the values the first trials draw (`workers.StagedSampler`)."""
    if space.n_layers is None:
        raise StudyError("the staged search's first stage needs a resolved space; call SearchSpace.resolve(n_layers)")
    return [trial_values(default_params(kind, space, space.n_layers)) for kind in space.kinds]


def write_figures(study: optuna.Study, out_dir: str | Path) -> tuple[list[str], dict[str, str]]:
    """Optimisation history, parameter importances and slice plots as HTML (plotly.js written once
    beside them); a figure that cannot be drawn (e.g. importances with < 2 complete trials) is
    skipped with the reason."""
    import plotly.offline

    out = Path(out_dir)
    vis = optuna.visualization
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: vis.plot_optimization_history(study),
        "param_importances": lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        ),
        "slice": lambda: vis.plot_slice(study),
    }
    written: list[str] = []
    skipped: dict[str, str] = {}
    for name, make in makers.items():
        if name == "param_importances" and len(complete) < 2:
            skipped[name] = f"needs at least 2 complete trials, has {len(complete)}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
            html = fig.to_html(include_plotlyjs="directory", full_html=True)
        except Exception as e:  # optuna raises assorted errors for degenerate studies
            skipped[name] = f"{type(e).__name__}: {first_line(e)}"
            continue
        atomic_write_text(out / f"{name}.html", html)
        written.append(f"{name}.html")
    if written and not (out / "plotly.min.js").is_file():
        atomic_write_text(out / "plotly.min.js", plotly.offline.get_plotlyjs())
    return written, skipped


__all__ = [
    "check_corpora",
    "check_resume_options",
    "default_study_name",
    "run_isv_search",
    "write_figures",
    "write_isv_outputs",
]
