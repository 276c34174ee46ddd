"""Steering Vector Ensembles (SVE) from per-axis ISVs, the merged-datasets baseline, matched random
controls, and their evaluation on the test split (in-distribution, leave-one-axis-out, intersectional
categories, MMLU retention), each steered result beside its control and paired against the baseline, with its
per-item steerability; the debiasing baselines (lens_steer.baselines) judged the same way beside them.

Entry points: `lens_steer.isv.load_isvs` -> `build_ensembles` (+ `merged_vector`, `loo_ensembles`) ->
`evaluate_ensembles(model, isvs, config, out_dir)`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lens_steer.axes import OOD_CATEGORIES
from lens_steer.baselines import BASELINES
from lens_steer.data.bbq import LOAD_SOURCES, BbqItem
from lens_steer.data.select import limit_items, select
from lens_steer.errors import DataError, StudyError, VectorError
from lens_steer.scoring import DEFAULT_SCORING, PROMPT_FORMATS, SCORINGS
from lens_steer.extract import AGGREGATORS, extract_vector
from lens_steer.files import atomic_write_text, write_json
from lens_steer.metrics import BbqPrediction, bbq_metrics, mmlu_accuracy, paired_comparison
from lens_steer.stats import mcnemar_exact, metrics_to_dict
from lens_steer.models import HookedModel
from lens_steer.pairs import concat
from lens_steer.residual_cache import ResidualCache, start_block
from lens_steer.store import prediction_settings, through_store
from lens_steer.tasks.bbq import bbq_predictions
from lens_steer.isv import VECTOR_SCALE, Isv, isv_pairs
from lens_steer.vectors import SteeringVector, mean_vectors

ENSEMBLE_KINDS: tuple[str, ...] = ("sve", "sve_norm", "sve_weighted")
SPLIT_SOURCES: tuple[str, ...] = ("ours", "v2")
Progress = Callable[[str], None]


# ============================================================================ ISVs and ensembles
def norm_matched_mean(vectors: Sequence[SteeringVector]) -> SteeringVector:
    """Per-layer mean, each layer rescaled to the mean norm of the inputs that have that layer."""
    mean = mean_vectors(vectors)
    dirs = {}
    for layer, v in mean.directions.items():
        norms = [float(x.directions[layer].norm()) for x in vectors if layer in x.directions]
        target = sum(norms) / len(norms)
        n = float(v.norm())
        if n == 0:
            raise VectorError(f"the mean at layer {layer} is zero (the inputs cancel); norm matching is undefined there")
        dirs[layer] = v * (target / n)
    meta = dataclasses.replace(mean.metadata, method="norm_matched_mean", provenance={**mean.metadata.provenance, "operation": "norm_matched_mean"})
    return SteeringVector(dirs, meta)


def build_ensembles(isvs: Sequence[Isv], weights: Sequence[float] | None = None) -> dict[str, SteeringVector]:
    """The ensembles of `isvs`:
    - "sve": per-layer mean of the ISV vectors (the paper, not renormalised; the paper averages unit directions, ours are contrast-scaled),
    - "sve_norm": that mean rescaled per layer to the inputs' mean norm,
    - "sve_weighted": per-layer mean of `weight_i * vector_i`, weights default to each ISV's own
      coefficient (the mean of the deltas the ISVs apply), so its coefficient 1 reproduces that mean.
    """
    if not isvs:
        raise StudyError("no ISVs to ensemble")
    vecs = [i.vector for i in isvs]
    w = [i.coeff for i in isvs] if weights is None else list(weights)
    if len(w) != len(vecs) or not all(math.isfinite(x) for x in w):
        raise StudyError(f"need one finite weight per ISV ({len(vecs)}), got {w}")
    axes = [i.axis for i in isvs]
    out = {
        "sve": _tag(mean_vectors(vecs), "sve", axes),
        "sve_norm": _tag(norm_matched_mean(vecs), "sve_norm", axes),
        "sve_weighted": _tag(mean_vectors([v * x for v, x in zip(vecs, w)]), "sve_weighted", axes, weights=w),
    }
    return out


def _tag(vec: SteeringVector, name: str, axes: Sequence[str], **extra: Any) -> SteeringVector:
    meta = dataclasses.replace(vec.metadata, provenance={**vec.metadata.provenance, "ensemble": name, "axes": list(axes), **extra})
    return SteeringVector(dict(vec.directions), meta)


def loo_ensembles(isvs: Sequence[Isv], kind: str = "sve") -> dict[str, SteeringVector]:
    """`{held-out axis: ensemble of the other ISVs}`."""
    if len(isvs) < 2:
        raise StudyError("leave-one-axis-out ensembles need at least two ISVs")
    return {i.axis: build_ensembles([j for j in isvs if j.axis != i.axis])[kind] for i in isvs}


def merged_vector(
    model: HookedModel,
    isvs: Sequence[Isv],
    *,
    method: str = "pca_diff",
    layers: Sequence[int] | None = None,
    data_root: str | Path | None = None,
    max_batch: int = 16,
) -> SteeringVector:
    """The "merged datasets" baseline: one vector from the concatenation of every ISV's contrastive
    pair set, at `layers` (default: every layer any ISV steers), scaled as the ISVs are (`search.VECTOR_SCALE`)."""
    if method not in AGGREGATORS:
        raise StudyError(f"unknown merged method {method!r}; use one of {', '.join(AGGREGATORS)}")
    pairs = concat(*(isv_pairs(i.vector, model.tokenizer, data_root) for i in isvs))
    use = sorted({x for i in isvs for x in i.vector.layers}) if layers is None else list(layers)
    vec = extract_vector(model, pairs, use, method=method, hook=isvs[0].vector.metadata.hook, max_batch=max_batch, scale=VECTOR_SCALE)
    return _tag(vec, "merged", [i.axis for i in isvs])


def random_control(vector: SteeringVector, seed: int) -> SteeringVector:
    """A random direction per layer with the same norm as `vector`'s, at the same layers (seeded)."""
    gen = torch.Generator().manual_seed(int(seed))
    dirs = {}
    for layer, v in vector.directions.items():
        r = torch.randn(v.shape[0], generator=gen, dtype=torch.float64)
        dirs[layer] = (r / r.norm() * float(v.norm())).float()
    meta = dataclasses.replace(vector.metadata, method="random_control", provenance={"operation": "random_control", "seed": int(seed), "of": vector.metadata.provenance.get("ensemble", vector.metadata.provenance.get("axis"))})
    return SteeringVector(dirs, meta)


# ============================================================================ configuration
@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """How ensembles are tuned (validation) and judged (test); JSON round-trip via dataclasses.asdict."""

    coeffs: tuple[float, ...] = tuple(float(c) for c in range(-5, 6))
    kinds: tuple[str, ...] = ENSEMBLE_KINDS
    val_limit: int | None = 100
    test_limit: int | None = 300
    scoring: str = DEFAULT_SCORING
    prompt_format: str = "reference"
    split_seed: int = 0
    seed: int = 0
    n_boot: int = 1000
    control_seeds: tuple[int, ...] = (1, 2, 3)
    mmlu_items: int = 200
    ood: bool = True
    ood_source: str = "mixed"
    generated_dir: str | None = None  # generated BBQ files, for a `bbq_source` or `ood_source` that reads them
    bbq_source: str = "official"  # where the axes' validation and test items come from: the search's own source
    merged_method: str = "pca_diff"
    max_batch: int = 16
    store_dir: str | None = None  # keep every evaluation's predictions there (lens_steer.store); re-runs read them back
    baselines: tuple[str, ...] = ()  # debiasing baselines judged beside the vectors (lens_steer.baselines.BASELINES)
    splits: str = "ours"  # validation and test items of the axes: ours (seeded splits) or v2 (the later paper's exact files)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise StudyError(f"ensemble config: {msg}")

        need(len(self.coeffs) > 0 and all(math.isfinite(c) for c in self.coeffs), f"coeffs must be a non-empty list of numbers, got {list(self.coeffs)}")
        need(len(self.kinds) > 0 and all(k in ENSEMBLE_KINDS for k in self.kinds), f"kinds must be drawn from {', '.join(ENSEMBLE_KINDS)}, got {list(self.kinds)}")
        need(self.scoring in SCORINGS, f"unknown scoring {self.scoring!r}; use one of {', '.join(SCORINGS)}")
        need(self.prompt_format in PROMPT_FORMATS, f"unknown prompt_format {self.prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}")
        need(self.bbq_source in LOAD_SOURCES, f"unknown bbq_source {self.bbq_source!r}; use one of {', '.join(LOAD_SOURCES)}")
        need(self.merged_method in AGGREGATORS, f"unknown merged_method {self.merged_method!r}; use one of {', '.join(AGGREGATORS)}")
        need(all(b in BASELINES for b in self.baselines), f"baselines must be drawn from {', '.join(BASELINES)}, got {list(self.baselines)}")
        need(self.splits in SPLIT_SOURCES, f"unknown splits {self.splits!r}; use one of {', '.join(SPLIT_SOURCES)}")
        for name in ("val_limit", "test_limit"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v >= 1), f"{name} must be a positive integer or null, got {v!r}")
        need(isinstance(self.mmlu_items, int) and self.mmlu_items >= 0, f"mmlu_items must be >= 0 (0 skips MMLU), got {self.mmlu_items!r}")
        need(isinstance(self.n_boot, int) and self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot!r}")
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "baselines", tuple(dict.fromkeys(self.baselines)))
        object.__setattr__(self, "control_seeds", tuple(int(s) for s in self.control_seeds))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
    coefficients, "slopes" holds per axis the per-item steerability over them (lens_steer.steerability.margin_slopes:
    the mean slope of each item's correct-answer margin and the share of anti-steerable items, negative slope)."""
    rows = []
    by_coeff: dict[str, dict[float, list[BbqPrediction]]] = {a: {} for a in items_by_axis}
    for c in coeffs:
        for a, items in items_by_axis.items():
            by_coeff[a][c] = _predict(model, items, vector, c, config, residual_cache)
        per_axis = {a: _acc(by_coeff[a][c]) for a in items_by_axis}
        rows.append({"coeff": c, "by_axis": per_axis, "mean": sum(per_axis.values()) / len(per_axis)})
    out: dict[str, Any] = {"rows": rows, "best": best_coeff(rows)}
    if len(set(coeffs)) >= 2 and all(p.option_logprobs for sweep in by_coeff.values() for ps in sweep.values() for p in ps):
        from lens_steer.steerability import slope_summary

        out["slopes"] = {a: slope_summary(sweep, n_boot=config.n_boot, seed=config.seed) for a, sweep in by_coeff.items()}
    return out


def best_coeff(rows: Sequence[Mapping[str, Any]], exclude: str | None = None) -> float:
    """The coefficient with the highest mean validation accuracy (over axes other than `exclude`);
    ties go to the smaller |coeff|."""

    def score(r: Mapping[str, Any]) -> float:
        vals = [v for a, v in r["by_axis"].items() if a != exclude]
        return sum(vals) / len(vals) if vals else float("-inf")

    return float(max(rows, key=lambda r: (score(r), -abs(r["coeff"])))["coeff"])


def _predict(
    model: HookedModel, items: Sequence[BbqItem], vector: SteeringVector | None, coeff: float, config: EnsembleConfig, residual_cache: ResidualCache | None = None
) -> list[BbqPrediction]:
    """BBQ predictions steered by `coeff * vector`, through the prediction store (`config.store_dir`)."""

    def compute() -> list[BbqPrediction]:
        return bbq_predictions(
            model, items, vector=vector, coeff=coeff, scoring=config.scoring, prompt_format=config.prompt_format, max_batch=config.max_batch, residual_cache=residual_cache
        )[1]

    return through_store(config.store_dir, "bbq", items, vector, coeff, lambda: prediction_settings(model, config.scoring, config.prompt_format), compute)


def _bbq_entry(
    model: HookedModel,
    items: Sequence[BbqItem],
    base: Sequence[BbqPrediction],
    vector: SteeringVector,
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
        ctrl = _predict(model, items, random_control(vector, s), coeff, config, residual_cache)
        entry["controls"].append(
            {
                "seed": s,
                "vs_base": metrics_to_dict(paired_comparison(base, ctrl, n_boot=config.n_boot, seed=config.seed)),
                "steered_vs_control": metrics_to_dict(paired_comparison(ctrl, steered, n_boot=config.n_boot, seed=config.seed)),
            }
        )
    accs = [c["vs_base"]["overall"]["acc"]["steered"]["value"] for c in entry["controls"]]
    entry["control_mean_acc"] = sum(accs) / len(accs) if accs else None
    entry["beats_controls"] = all(c["steered_vs_control"]["overall"]["acc"]["diff"]["ci_low"] > 0 for c in entry["controls"]) if entry["controls"] else None
    return entry, steered


def judged_entry(base: Sequence[BbqPrediction], other: Sequence[BbqPrediction], coeff: float, config: EnsembleConfig, steer_file: Path | None) -> dict[str, Any]:
    """A method's BBQ result on the baseline's items: coefficient, paired comparison with the baseline, no controls
    yet, and its per-item steerability (None where the predictions hold no option log-probabilities); the per-item
    margins are written to `steer_file` (JSON lines) when given."""
    entry: dict[str, Any] = {"coeff": coeff, "vs_base": metrics_to_dict(paired_comparison(base, other, n_boot=config.n_boot, seed=config.seed)), "controls": [],
                             "control_mean_acc": None, "beats_controls": None}  # fmt: skip
    if all(p.option_logprobs for p in (*base, *other)):
        from lens_steer.files import write_jsonl
        from lens_steer.steerability import steerability_report

        rep = steerability_report(base, other, n_boot=config.n_boot, seed=config.seed)
        items = rep.pop("items")
        if steer_file is not None:
            write_jsonl(steer_file, items)
            rep["items_file"] = f"{steer_file.parent.name}/{steer_file.name}"
        entry["steerability"] = rep
    return entry


def _mmlu_result(
    model: HookedModel, items: Sequence[Any], vector: SteeringVector | None, coeff: float, config: EnsembleConfig, residual_cache: ResidualCache | None
) -> Any:
    """`run_mmlu`'s records through the prediction store (`config.store_dir`), and their accuracy."""
    from lens_steer.tasks.mmlu import run_mmlu
    from lens_steer.tasks.result import BenchResult

    def compute() -> list[dict[str, Any]]:
        return run_mmlu(
            model, items, scoring=config.scoring, vector=vector, coeff=coeff, n_boot=0, seed=config.seed, max_batch=config.max_batch, residual_cache=residual_cache
        ).records

    rows = through_store(config.store_dir, "mmlu", items, vector, coeff, lambda: prediction_settings(model, config.scoring, "lm_eval", benchmark="mmlu"), compute)
    acc = mmlu_accuracy([bool(r["correct"]) for r in rows], [r["subject"] for r in rows], n_boot=config.n_boot, seed=config.seed)
    return BenchResult("mmlu", rows, metrics_to_dict(acc))


def _mmlu_entry(
    model: HookedModel,
    items: Sequence[Any],
    base: Any,
    vector: SteeringVector | None,
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
            {"seed": s, **_mmlu_entry(model, items, base, random_control(vector, s), coeff, config, residual_cache, control=False)} for s in config.control_seeds
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
    for isv in isvs:
        isv.vector.check_compatible(model)
    axes = [i.axis for i in isvs]
    ens = {k: v for k, v in build_ensembles(isvs).items() if k in config.kinds}
    if merged is None:
        say("extracting the merged-datasets vector")
        merged = merged_vector(model, isvs, method=config.merged_method, data_root=data_root, max_batch=config.max_batch)
    ens["merged"] = merged
    for name, vec in ens.items():
        vec.save(out / f"{name}.safetensors")
    loo = loo_ensembles(isvs, "sve") if len(isvs) >= 2 else {}
    for axis, vec in loo.items():
        vec.save(out / "loo" / f"sve-without-{axis}.safetensors")
    starts = {start_block(v.hook_names.values()) for v in [*(i.vector for i in isvs), *ens.values(), *loo.values()]} - {None}
    residual_cache = ResidualCache(starts) if starts else None  # type: ignore[arg-type]  # controls and coefficient sweeps share each vector's stored residuals

    def items(target: str, split: str, limit: int | None, source: str) -> list[BbqItem]:
        if config.splits == "v2" and target in axes:
            from lens_steer.protocol_v2 import v2_eval_items

            return v2_eval_items(target, split, splits="v2", limit=limit, seed=config.seed, data_root=data_root)
        return select(target, split, limit, source=source, seed=config.seed, split_seed=config.split_seed, data_root=data_root, generated_dir=config.generated_dir)

    scorer = _baseline_scorer(model, axes, config, data_root, load_base) if config.baselines else None
    steer_dir = out / "steerability"

    def judged_baselines(target: str, test: Sequence[BbqItem], base: Sequence[BbqPrediction], sve: Sequence[BbqPrediction] | None) -> dict[str, Any]:
        out_b: dict[str, Any] = {}
        for name in config.baselines:
            say(f"baseline {name}: {target}")
            preds = scorer.bbq(test, name)  # type: ignore[union-attr]
            out_b[name] = judged_entry(base, preds, 0.0, config, steer_dir / f"{target}.{name}.jsonl")
            if sve is not None:
                out_b[name]["vs_sve"] = metrics_to_dict(paired_comparison(sve, preds, n_boot=config.n_boot, seed=config.seed))
        return out_b

    val = {a: items(a, "validation", config.val_limit, config.bbq_source) for a in axes}
    sweeps: dict[str, Any] = {}
    for name, vec in ens.items():
        say(f"coefficient sweep for {name} on validation")
        sweeps[name] = coefficient_sweep(model, vec, val, config.coeffs, config, residual_cache)
    coeff = {name: sweeps[name]["best"] for name in ens}

    results: dict[str, Any] = {"config": config.to_json(), "axes": axes, "coefficients": coeff, "sweeps": sweeps, "in_distribution": {}, "ood": {}, "mmlu": None}
    results["isvs"] = {i.axis: {"coeff": i.coeff, "path": str(i.path) if i.path else None, "params": i.vector.metadata.provenance.get("params")} for i in isvs}
    for isv in isvs:
        a = isv.axis
        say(f"test split: {a}")
        test = items(a, "test", config.test_limit, config.bbq_source)
        base = _predict(model, test, None, 0.0, config)
        row: dict[str, Any] = {"n": len(test), "baseline": metrics_to_dict(bbq_metrics(base, n_boot=config.n_boot, seed=config.seed)), "steered": {}}
        preds: dict[str, list[BbqPrediction]] = {}
        row["steered"]["isv"], preds["isv"] = _bbq_entry(model, test, base, isv.vector, isv.coeff, config, residual_cache, steer_dir / f"{a}.isv.jsonl")
        for name, vec in ens.items():
            row["steered"][name], preds[name] = _bbq_entry(model, test, base, vec, coeff[name], config, residual_cache, steer_dir / f"{a}.{name}.jsonl")
        # direct paired tests between steered runs (claims 2 and 4)
        if "sve" in preds:
            row["steered"]["sve"]["vs_isv"] = metrics_to_dict(paired_comparison(preds["isv"], preds["sve"], n_boot=config.n_boot, seed=config.seed))
            row["steered"]["merged"]["vs_sve"] = metrics_to_dict(paired_comparison(preds["sve"], preds["merged"], n_boot=config.n_boot, seed=config.seed))
        if a in loo and "sve" in sweeps:
            c = best_coeff(sweeps["sve"]["rows"], exclude=a)
            row["steered"]["sve_loo"] = {**_bbq_entry(model, test, base, loo[a], c, config, residual_cache, steer_dir / f"{a}.sve_loo.jsonl")[0], "coeff_chosen_without": a}
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
                "steered": {name: _bbq_entry(model, ood, base, vec, coeff[name], config, residual_cache, steer_dir / f"{cat}.{name}.jsonl")[0] for name, vec in ens.items()},
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
                **{f"isv:{i.axis}": _mmlu_entry(model, mm, base_m, i.vector, i.coeff, config, residual_cache) for i in isvs},
                **{name: _mmlu_entry(model, mm, base_m, vec, coeff[name], config, residual_cache) for name, vec in ens.items()},
                **(_mmlu_baselines(scorer, mm, base_m, config) if scorer is not None else {}),
            },
        }
    write_json(out / "ensemble.json", results)
    atomic_write_text(out / "results.csv", results_csv(results))
    return results


def _baseline_scorer(model: HookedModel, axes: Sequence[str], config: EnsembleConfig, data_root: str | Path | None, load_base: Callable[[], HookedModel] | None) -> Any:
    """The BaselineScorer of a study; `finetune` trains on the positives of the BBQ-answer pairs of the axes' train split."""
    from lens_steer.baseline_runs import BaselineScorer
    from lens_steer.baselines import finetune_texts

    texts = None
    if "finetune" in config.baselines:
        if load_base is None:
            raise StudyError("the finetune baseline needs a loader of a fresh base model (evaluate_ensembles' load_base)")
        if config.splits == "v2":
            from lens_steer.data.bbq_v2 import load_v2_train_pairs

            texts = [pos for a in axes for pos, _ in load_v2_train_pairs(a, data_root)]
        else:
            texts = finetune_texts([it for a in axes for it in select(a, "train", None, source=config.bbq_source, seed=config.seed, split_seed=config.split_seed, data_root=data_root, generated_dir=config.generated_dir)])
    return BaselineScorer(model, scoring=config.scoring, prompt_format=config.prompt_format, max_batch=config.max_batch, store_dir=config.store_dir,
                          load_base=load_base, train_texts=texts, finetune_seed=config.seed)  # fmt: skip


def _mmlu_baselines(scorer: Any, items: Sequence[Any], base: Any, config: EnsembleConfig) -> dict[str, Any]:
    """MMLU entries of the baselines that score MMLU (the paper's self-debias is a BBQ protocol here), each paired with
    the unsteered model in the same prompt format (self-debias-schick needs the reference format; the others use lm_eval's)."""
    from lens_steer.baseline_runs import MMLU_FORMATS

    out: dict[str, Any] = {}
    for name in (b for b in config.baselines if b in MMLU_FORMATS):
        fmt = MMLU_FORMATS[name]
        rows = scorer.mmlu(items, name, fmt)
        base_rows = base.records if fmt == "lm_eval" else scorer.mmlu(items, "none", fmt)
        acc = mmlu_accuracy([bool(r["correct"]) for r in rows], [r["subject"] for r in rows], n_boot=config.n_boot, seed=config.seed)
        base_acc = mmlu_accuracy([bool(r["correct"]) for r in base_rows], [r["subject"] for r in base_rows], n_boot=0)
        b = [bool(r["correct"]) for r in base_rows]
        m = [bool(r["correct"]) for r in rows]
        gained, lost = sum((not x) and y for x, y in zip(b, m)), sum(x and not y for x, y in zip(b, m))
        entry = {"coeff": 0.0, "acc": metrics_to_dict(acc)["micro"], "diff": acc["micro"].value - base_acc["micro"].value,
                 "mcnemar": {"p": mcnemar_exact(gained, lost), "gained": gained, "lost": lost}}  # fmt: skip
        if fmt != "lm_eval":
            entry["note"] = f"{fmt} prompt format, paired with the unsteered model in that format (its accuracy {base_acc['micro'].value:.3f})"
        out[name] = entry
    return out


CSV_COLUMNS = ("eval", "target", "vector", "coeff", "control_seed", "n", "acc", "acc_ci_low", "acc_ci_high", "diff_vs_base", "diff_ci_low", "diff_ci_high", "mcnemar_p")


def results_csv(results: Mapping[str, Any]) -> str:
    """One row per (evaluation, target, vector, control seed) from `evaluate_ensembles` output."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def bbq_rows(kind: str, target: str, block: Mapping[str, Any]) -> None:
        b = block["baseline"]["acc"]
        w.writerow([kind, target, "baseline", 0.0, "", b["n"], b["value"], b["ci_low"], b["ci_high"], "", "", "", ""])
        for name, e in block["steered"].items():
            for seed, cmp in [(None, e["vs_base"])] + [(c["seed"], c["vs_base"]) for c in e["controls"]]:
                acc = cmp["overall"]["acc"]
                w.writerow([kind, target, name if seed is None else f"{name}:control", e["coeff"], "" if seed is None else seed, acc["steered"]["n"],
                            acc["steered"]["value"], acc["steered"]["ci_low"], acc["steered"]["ci_high"], acc["diff"]["value"], acc["diff"]["ci_low"], acc["diff"]["ci_high"], cmp["overall"]["mcnemar"]["p"]])

    for axis, block in results["in_distribution"].items():
        bbq_rows("bbq_test", axis, block)
    for cat, block in results["ood"].items():
        if "skipped" not in block:
            bbq_rows("bbq_ood", cat, block)
    mm = results.get("mmlu")
    if mm:
        b = mm["baseline"]
        w.writerow(["mmlu", "mmlu", "baseline", 0.0, "", mm["n"], b["value"], b["ci_low"], b["ci_high"], "", "", "", ""])
        for name, e in mm["steered"].items():
            for seed, x in [(None, e)] + [(c["seed"], c) for c in e.get("controls", [])]:
                a = x["acc"]
                w.writerow(["mmlu", "mmlu", name if seed is None else f"{name}:control", e["coeff"], "" if seed is None else seed, mm["n"], a["value"], a["ci_low"], a["ci_high"], x["diff"], "", "", x["mcnemar"]["p"]])
    return buf.getvalue()


__all__ = [
    "ENSEMBLE_KINDS",
    "EnsembleConfig",
    "best_coeff",
    "build_ensembles",
    "coefficient_sweep",
    "evaluate_ensembles",
    "loo_ensembles",
    "merged_vector",
    "norm_matched_mean",
    "random_control",
    "results_csv",
]
