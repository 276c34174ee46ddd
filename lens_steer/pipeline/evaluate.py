"""The test stage: each ensemble's coefficient chosen on validation, then every method (ISVs, ensembles, merged
datasets, leave-one-axis-out, the debiasing baselines) judged on the test split in distribution, on the
intersectional categories and on MMLU, each steered result beside its matched random controls and paired against
the unsteered model, with its per-item steerability.

Entry point: `evaluate_ensembles(model, isvs, config, out_dir)`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import OOD_CATEGORIES
from lens_steer.data.bbq import BbqItem
from lens_steer.data.select import limit_items, select
from lens_steer.errors import DataError
from lens_steer.files import atomic_write_text, write_json
from lens_steer.forward.residual_cache import ResidualCache, start_block
from lens_steer.methods.ensemble import build_ensembles, loo_ensembles, merged_vector, random_control
from lens_steer.methods.isv import Isv
from lens_steer.model.load import HookedModel
from lens_steer.pipeline.baseline_stage import baseline_scorer, mmlu_baselines
from lens_steer.pipeline.evaluation_config import EnsembleConfig
from lens_steer.pipeline.results_csv import results_csv
from lens_steer.stats import mcnemar_exact, metrics_to_dict
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.bbq import bbq_predictions
from lens_steer.tasks.metrics import BbqPrediction, bbq_metrics, mmlu_accuracy, paired_comparison
from lens_steer.tasks.store import prediction_settings, through_store

Progress = Callable[[str], None]


# ============================================================================ evaluation
def _acc(preds: Sequence[BbqPrediction]) -> float:
    return float(bbq_metrics(preds, n_boot=0)["acc"].value)


def coefficient_sweep(
    model: HookedModel,
    vector: SteeringVector,
    items_by_axis: Mapping[str, Sequence[BbqItem]],
    coeffs: Sequence[float],
    config: EnsembleConfig,
    residual_cache: ResidualCache | None = None,
) -> dict[str, Any]:
    """Validation accuracy per axis for each coefficient; "best" maximises the mean over axes. With two or more
    coefficients, "slopes" holds per axis the per-item steerability over them
    (lens_steer.methods.steerability.margin_slopes: the mean slope of each item's correct-answer margin and the share of
    anti-steerable items, negative slope)."""
    rows = []
    by_coeff: dict[str, dict[float, list[BbqPrediction]]] = {a: {} for a in items_by_axis}
    for c in coeffs:
        for a, items in items_by_axis.items():
            by_coeff[a][c] = _predict(model, items, vector, c, config, residual_cache)
        per_axis = {a: _acc(by_coeff[a][c]) for a in items_by_axis}
        rows.append({"coeff": c, "by_axis": per_axis, "mean": sum(per_axis.values()) / len(per_axis)})
    out: dict[str, Any] = {"rows": rows, "best": best_coeff(rows)}
    if len(set(coeffs)) >= 2 and all(
        p.option_logprobs for sweep in by_coeff.values() for ps in sweep.values() for p in ps
    ):
        from lens_steer.methods.steerability import slope_summary

        out["slopes"] = {
            a: slope_summary(sweep, n_boot=config.n_boot, seed=config.seed) for a, sweep in by_coeff.items()
        }
    return out


def best_coeff(rows: Sequence[Mapping[str, Any]], exclude: str | None = None) -> float:
    """The coefficient with the highest mean validation accuracy (over axes other than `exclude`);
    ties go to the smaller |coeff|."""

    def score(r: Mapping[str, Any]) -> float:
        vals = [v for a, v in r["by_axis"].items() if a != exclude]
        return sum(vals) / len(vals) if vals else float("-inf")

    return float(max(rows, key=lambda r: (score(r), -abs(r["coeff"])))["coeff"])


Steering = SteeringVector | Intervention | None  # a vector (at a coefficient) or an intervention of any kind


def control_of(steering: SteeringVector | Intervention, seed: int) -> SteeringVector | Intervention:
    """The matched random control: of a vector, random directions of its per-layer norms; of an intervention, its
    kind's own (`Intervention.random_control`)."""
    return steering.random_control(seed) if isinstance(steering, Intervention) else random_control(steering, seed)


def intervention_coeff(iv: Intervention) -> float:
    """The coefficient an intervention applies (0 for kinds without one), for the records."""
    return float(iv.params().get("coeff", 0.0))


def _predict(
    model: HookedModel,
    items: Sequence[BbqItem],
    vector: Steering,
    coeff: float,
    config: EnsembleConfig,
    residual_cache: ResidualCache | None = None,
) -> list[BbqPrediction]:
    """BBQ predictions under `coeff * vector` or an intervention, through the prediction store (`config.store_dir`)."""
    iv = vector if isinstance(vector, Intervention) else None
    vec = None if iv is not None else vector

    def compute() -> list[BbqPrediction]:
        return bbq_predictions(
            model,
            items,
            vector=vec,
            coeff=coeff,
            intervention=iv,
            scoring=config.scoring,
            prompt_format=config.prompt_format,
            max_batch=config.max_batch,
            residual_cache=residual_cache,
        )[1]

    return through_store(
        config.store_dir,
        "bbq",
        items,
        vector,
        coeff,
        lambda: prediction_settings(model, config.scoring, config.prompt_format),
        compute,
    )


def _bbq_entry(
    model: HookedModel,
    items: Sequence[BbqItem],
    base: Sequence[BbqPrediction],
    vector: SteeringVector | Intervention,
    coeff: float,
    config: EnsembleConfig,
    residual_cache: ResidualCache | None = None,
    steer_file: Path | None = None,
) -> tuple[dict[str, Any], list[BbqPrediction]]:
    """One steered BBQ result with its paired test against the baseline, its per-item steerability (items written to
    `steer_file`) and its matched controls, and the steered predictions it was computed from."""
    steered = _predict(model, items, vector, coeff, config, residual_cache)
    entry = judged_entry(base, steered, coeff, config, steer_file)
    for s in config.control_seeds:
        ctrl = _predict(model, items, control_of(vector, s), coeff, config, residual_cache)
        entry["controls"].append(
            {
                "seed": s,
                "vs_base": metrics_to_dict(paired_comparison(base, ctrl, n_boot=config.n_boot, seed=config.seed)),
                "steered_vs_control": metrics_to_dict(
                    paired_comparison(ctrl, steered, n_boot=config.n_boot, seed=config.seed)
                ),
            }
        )
    accs = [c["vs_base"]["overall"]["acc"]["steered"]["value"] for c in entry["controls"]]
    entry["control_mean_acc"] = sum(accs) / len(accs) if accs else None
    entry["beats_controls"] = (
        all(c["steered_vs_control"]["overall"]["acc"]["diff"]["ci_low"] > 0 for c in entry["controls"])
        if entry["controls"]
        else None
    )
    return entry, steered


def judged_entry(
    base: Sequence[BbqPrediction],
    other: Sequence[BbqPrediction],
    coeff: float,
    config: EnsembleConfig,
    steer_file: Path | None,
) -> dict[str, Any]:
    """A method's BBQ result on the baseline's items: coefficient, paired comparison with the baseline, no controls
    yet, and its per-item steerability (None where the predictions hold no option log-probabilities); the per-item
    margins are written to `steer_file` (JSON lines) when given."""
    entry: dict[str, Any] = {
        "coeff": coeff,
        "vs_base": metrics_to_dict(paired_comparison(base, other, n_boot=config.n_boot, seed=config.seed)),
        "controls": [],
        "control_mean_acc": None,
        "beats_controls": None,
    }
    if all(p.option_logprobs for p in (*base, *other)):
        from lens_steer.files import write_jsonl
        from lens_steer.methods.steerability import steerability_report

        rep = steerability_report(base, other, n_boot=config.n_boot, seed=config.seed)
        items = rep.pop("items")
        if steer_file is not None:
            write_jsonl(steer_file, items)
            rep["items_file"] = f"{steer_file.parent.name}/{steer_file.name}"
        entry["steerability"] = rep
    return entry


def _mmlu_result(
    model: HookedModel,
    items: Sequence[Any],
    vector: Steering,
    coeff: float,
    config: EnsembleConfig,
    residual_cache: ResidualCache | None,
) -> Any:
    """`run_mmlu`'s records through the prediction store (`config.store_dir`), and their accuracy."""
    from lens_steer.tasks.mmlu import run_mmlu
    from lens_steer.tasks.result import BenchResult

    iv = vector if isinstance(vector, Intervention) else None

    def compute() -> list[dict[str, Any]]:
        return run_mmlu(
            model,
            items,
            scoring=config.scoring,
            vector=None if iv is not None else vector,
            coeff=coeff,
            intervention=iv,
            n_boot=0,
            seed=config.seed,
            max_batch=config.max_batch,
            residual_cache=residual_cache,
        ).records

    rows = through_store(
        config.store_dir,
        "mmlu",
        items,
        vector,
        coeff,
        lambda: prediction_settings(model, config.scoring, "lm_eval", benchmark="mmlu"),
        compute,
    )
    acc = mmlu_accuracy(
        [bool(r["correct"]) for r in rows], [r["subject"] for r in rows], n_boot=config.n_boot, seed=config.seed
    )
    return BenchResult("mmlu", rows, metrics_to_dict(acc))


def _mmlu_entry(
    model: HookedModel,
    items: Sequence[Any],
    base: Any,
    vector: Steering,
    coeff: float,
    config: EnsembleConfig,
    residual_cache: ResidualCache | None = None,
    *,
    control: bool = True,
) -> dict[str, Any]:
    res = _mmlu_result(model, items, vector, coeff, config, residual_cache)
    out: dict[str, Any] = {"coeff": coeff, "acc": res.metrics["micro"]}
    if base is not None:
        b = [r["correct"] for r in base.records]
        s = [r["correct"] for r in res.records]
        gained = sum((not x) and y for x, y in zip(b, s))
        lost = sum(x and not y for x, y in zip(b, s))
        out["diff"] = res.metrics["micro"]["value"] - base.metrics["micro"]["value"]
        out["mcnemar"] = {"p": mcnemar_exact(gained, lost), "gained": gained, "lost": lost}
    if control and vector is not None:
        out["controls"] = [
            {
                "seed": s,
                **_mmlu_entry(model, items, base, control_of(vector, s), coeff, config, residual_cache, control=False),
            }
            for s in config.control_seeds
        ]
    return out


def evaluate_ensembles(
    model: HookedModel,
    isvs: Sequence[Isv],
    config: EnsembleConfig,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    progress: Progress | None = None,
    load_base: Callable[[], HookedModel] | None = None,
    merged: SteeringVector | None = None,
) -> dict[str, Any]:
    """Build the ensembles and the merged baseline, pick their coefficients on validation, and judge
    baseline, ISV, ensembles, merged and leave-one-axis-out ensembles on the test split (plus OOD
    categories and MMLU), each steered result with matched random controls and its per-item steerability, and
    beside them the debiasing baselines of `config.baselines` (no controls; each also paired against SVE).
    Writes vectors, `ensemble.json`, `results.csv` and `steerability/<target>.<method>.jsonl` into `out_dir`;
    returns the JSON object.

    `load_base` loads a fresh copy of the model (the `finetune` baseline trains one); `merged`: a merged-datasets
    vector made elsewhere (the v2 protocol's), instead of one extracted from the ISVs' pair sets."""
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with_vec = [i for i in isvs if i.vector is not None]  # a search without an additive trial has no ISV vector
    for isv in with_vec:
        isv.vector.check_compatible(model)  # type: ignore[union-attr]
    axes = [i.axis for i in isvs]
    ens = {k: v for k, v in build_ensembles(with_vec).items() if k in config.kinds} if with_vec else {}
    if merged is None and with_vec:
        say("extracting the merged-datasets vector")
        merged = merged_vector(
            model, with_vec, method=config.merged_method, data_root=data_root, max_batch=config.max_batch
        )
    if merged is not None:
        ens["merged"] = merged
    for name, vec in ens.items():
        vec.save(out / f"{name}.safetensors")
    loo = loo_ensembles(with_vec, "sve") if len(with_vec) >= 2 and "sve" in ens else {}
    for axis, vec in loo.items():
        vec.save(out / "loo" / f"sve-without-{axis}.safetensors")
    chosen = {i.axis: i.chosen for i in isvs if i.chosen is not None}
    kinds = {i.axis: i.by_kind for i in isvs} if config.kind_entries else {}
    edits = [*(i.vector for i in with_vec), *ens.values(), *loo.values(), *chosen.values()]
    edits += [iv for per_axis in kinds.values() for iv in per_axis.values()]
    starts = {start_block(v.hook_names.values()) for v in edits} - {None}
    # controls and coefficient sweeps share each vector's stored residuals
    residual_cache = ResidualCache(starts) if starts else None  # type: ignore[arg-type]

    def items(target: str, split: str, limit: int | None, source: str) -> list[BbqItem]:
        if config.splits == "v2" and target in axes:
            from lens_steer.methods.protocol_v2 import v2_eval_items

            return v2_eval_items(target, split, splits="v2", limit=limit, seed=config.seed, data_root=data_root)
        return select(
            target,
            split,
            limit,
            source=source,
            seed=config.seed,
            split_seed=config.split_seed,
            data_root=data_root,
            generated_dir=config.generated_dir,
        )

    scorer = baseline_scorer(model, axes, config, data_root, load_base) if config.baselines else None
    steer_dir = out / "steerability"

    def judged_baselines(
        target: str, test: Sequence[BbqItem], base: Sequence[BbqPrediction], sve: Sequence[BbqPrediction] | None
    ) -> dict[str, Any]:
        out_b: dict[str, Any] = {}
        for name in config.baselines:
            say(f"baseline {name}: {target}")
            preds = scorer.bbq(test, name)  # type: ignore[union-attr]
            out_b[name] = judged_entry(base, preds, 0.0, config, steer_dir / f"{target}.{name}.jsonl")
            if sve is not None:
                out_b[name]["vs_sve"] = metrics_to_dict(
                    paired_comparison(sve, preds, n_boot=config.n_boot, seed=config.seed)
                )
        return out_b

    val = {a: items(a, "validation", config.val_limit, config.bbq_source) for a in axes}
    sweeps: dict[str, Any] = {}
    for name, vec in ens.items():
        say(f"coefficient sweep for {name} on validation")
        sweeps[name] = coefficient_sweep(model, vec, val, config.coeffs, config, residual_cache)
    coeff = {name: sweeps[name]["best"] for name in ens}

    results: dict[str, Any] = {
        "config": config.to_json(),
        "axes": axes,
        "coefficients": coeff,
        "sweeps": sweeps,
        "in_distribution": {},
        "ood": {},
        "mmlu": None,
    }
    results["isvs"] = {
        i.axis: {
            "coeff": i.coeff,
            "path": str(i.path) if i.path else None,
            "params": i.vector.metadata.provenance.get("params") if i.vector is not None else None,
            "chosen": i.chosen.describe() if i.chosen is not None else None,
            "chosen_params": i.chosen_params,
            "kinds": {k: iv.describe() for k, iv in kinds.get(i.axis, {}).items()},
        }
        for i in isvs
    }
    for isv in isvs:
        a = isv.axis
        say(f"test split: {a}")
        test = items(a, "test", config.test_limit, config.bbq_source)
        base = _predict(model, test, None, 0.0, config)
        row: dict[str, Any] = {
            "n": len(test),
            "baseline": metrics_to_dict(bbq_metrics(base, n_boot=config.n_boot, seed=config.seed)),
            "steered": {},
        }
        preds: dict[str, list[BbqPrediction]] = {}
        if isv.vector is not None:
            row["steered"]["isv"], preds["isv"] = _bbq_entry(
                model, test, base, isv.vector, isv.coeff, config, residual_cache, steer_dir / f"{a}.isv.jsonl"
            )
        row["chosen_kind"] = isv.chosen.kind if isv.chosen is not None else "none"
        if isv.chosen is not None:  # the search's pick of any kind (none: doing nothing beat every trial)
            row["steered"]["chosen"], preds["chosen"] = _bbq_entry(
                model,
                test,
                base,
                isv.chosen,
                intervention_coeff(isv.chosen),
                config,
                residual_cache,
                steer_dir / f"{a}.chosen.jsonl",
            )
            row["steered"]["chosen"]["intervention"] = isv.chosen.describe()
        for kind, iv in kinds.get(a, {}).items():  # each kind's best trial, for the class x axis table
            say(f"test split: {a}, best {kind} intervention")
            row["steered"][f"kind:{kind}"] = _bbq_entry(
                model,
                test,
                base,
                iv,
                intervention_coeff(iv),
                config,
                residual_cache,
                steer_dir / f"{a}.kind-{kind}.jsonl",
            )[0]
            row["steered"][f"kind:{kind}"]["intervention"] = iv.describe()
        for name, vec in ens.items():
            row["steered"][name], preds[name] = _bbq_entry(
                model, test, base, vec, coeff[name], config, residual_cache, steer_dir / f"{a}.{name}.jsonl"
            )
        # direct paired tests between steered runs (claims 2 and 4)
        if "sve" in preds and "isv" in preds and "merged" in preds:
            row["steered"]["sve"]["vs_isv"] = metrics_to_dict(
                paired_comparison(preds["isv"], preds["sve"], n_boot=config.n_boot, seed=config.seed)
            )
            row["steered"]["merged"]["vs_sve"] = metrics_to_dict(
                paired_comparison(preds["sve"], preds["merged"], n_boot=config.n_boot, seed=config.seed)
            )
        if a in loo and "sve" in sweeps:
            c = best_coeff(sweeps["sve"]["rows"], exclude=a)
            row["steered"]["sve_loo"] = {
                **_bbq_entry(model, test, base, loo[a], c, config, residual_cache, steer_dir / f"{a}.sve_loo.jsonl")[0],
                "coeff_chosen_without": a,
            }
        row["steered"].update(judged_baselines(a, test, base, preds.get("sve")))
        results["in_distribution"][a] = row

    if config.ood:
        for cat in OOD_CATEGORIES:
            try:
                ood = items(cat, "test", config.test_limit, config.ood_source)
            except DataError as e:
                results["ood"][cat] = {"skipped": str(e)}
                continue
            say(f"out of distribution: {cat}")
            base = _predict(model, ood, None, 0.0, config)
            results["ood"][cat] = {
                "n": len(ood),
                "source": ood[0].source,
                "baseline": metrics_to_dict(bbq_metrics(base, n_boot=config.n_boot, seed=config.seed)),
                "steered": {
                    name: _bbq_entry(
                        model, ood, base, vec, coeff[name], config, residual_cache, steer_dir / f"{cat}.{name}.jsonl"
                    )[0]
                    for name, vec in ens.items()
                },
            }
            results["ood"][cat]["steered"].update(judged_baselines(cat, ood, base, None))

    if config.mmlu_items > 0:
        from lens_steer.data.mmlu import load_mmlu

        say("MMLU retention")
        mm = limit_items(load_mmlu("test", data_root=data_root), config.mmlu_items, seed=config.seed)
        base_m = _mmlu_result(model, mm, None, 0.0, config, None)
        results["mmlu"] = {
            "n": len(mm),
            "baseline": base_m.metrics["micro"],
            "steered": {
                **{
                    f"isv:{i.axis}": _mmlu_entry(model, mm, base_m, i.vector, i.coeff, config, residual_cache)
                    for i in with_vec
                },
                **{
                    f"chosen:{a}": _mmlu_entry(
                        model, mm, base_m, iv, intervention_coeff(iv), config, residual_cache, control=False
                    )
                    for a, iv in chosen.items()
                },
                **{
                    f"kind:{k}:{a}": _mmlu_entry(
                        model, mm, base_m, iv, intervention_coeff(iv), config, residual_cache, control=False
                    )
                    for a, per_axis in kinds.items()
                    for k, iv in per_axis.items()
                },
                **{
                    name: _mmlu_entry(model, mm, base_m, vec, coeff[name], config, residual_cache)
                    for name, vec in ens.items()
                },
                **(mmlu_baselines(scorer, mm, base_m, config) if scorer is not None else {}),
            },
        }
    write_json(out / "ensemble.json", results)
    atomic_write_text(out / "results.csv", results_csv(results))
    return results
