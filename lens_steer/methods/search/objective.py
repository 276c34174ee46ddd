"""The ISV search's objective: trial params in, the BBQ validation objective out. Its items (`validation_items`,
chosen by the config's data seed), the objective's formula (`objective_value`), and `IsvObjective`, which reads
each trial's contrastive activations from an `ActivationCache` and reuses the validation items' residual stream
before the first steered block across trials (`lens_steer.forward.residual_cache.ResidualCache`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from lens_steer.axes import Axis
from lens_steer.data.bbq import BbqItem
from lens_steer.data.select import limit_items, select
from lens_steer.errors import StudyError
from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.activations import PairActivations, pair_activations, vector_from_activations
from lens_steer.extract.consistency import activation_consistency
from lens_steer.extract.pair_sources import PairSource, search_pairs
from lens_steer.forward.residual_cache import ResidualCache, start_block
from lens_steer.methods.isv import VECTOR_SCALE
from lens_steer.methods.search.space import Params, SearchConfig
from lens_steer.model.load import HookedModel
from lens_steer.specs import parse_layers
from lens_steer.steering.vectors import SteeringVector, hook_name
from lens_steer.tasks.bbq import bbq_predictions
from lens_steer.tasks.metrics import BbqPrediction, bbq_metrics


def validation_items(axis: Axis, config: SearchConfig, data_root: str | Path | None = None) -> list[BbqItem]:
    """The axis's BBQ validation split (`config.bbq_source`), capped at `config.limit` (whole variant groups), in an
    order shuffled by `config.data_seed` so that every chunk is a fair sample for pruning. The sampler's seed
    (`config.seed`) plays no part: another sampler seed is judged on the same items."""
    val = select(
        axis.name,
        "validation",
        config.limit,
        source=config.bbq_source,
        seed=config.data_seed,
        split_seed=config.split_seed,
        data_root=data_root,
        generated_dir=config.generated_dir,
    )
    order = sorted(
        range(len(val)),
        key=lambda i: hashlib.sha256(f"{config.data_seed}:{val[i].example_id}:{i}".encode()).hexdigest(),
    )
    return [val[i] for i in order]


def study_pair_source(axis: Axis, config: SearchConfig) -> PairSource:
    """Where a study's `bbq_answer` pairs come from: the train split of the data its validation items come from."""
    return PairSource(axis.name, config.bbq_source, config.split_seed, config.data_seed, config.generated_dir)


def objective_value(
    metrics: Mapping[str, Any], config: SearchConfig, baseline: Mapping[str, float] | None = None
) -> float:
    """The configured objective from `bbq_metrics` output (values or Metric objects); maximised."""

    def v(name: str) -> float:
        m = metrics[name]
        return float(m.value if hasattr(m, "value") else m)

    if config.objective == "acc":
        return v("acc")
    if config.objective == "bias":
        return -(abs(v("bias_ambig")) + abs(v("bias_disambig"))) / 2
    if baseline is None:
        raise StudyError("objective ambig_guarded needs the baseline's disambiguated accuracy")
    floor = float(baseline["acc_disambig"]) - config.ambig_tolerance
    return v("acc_ambig") - config.guard_penalty * max(0.0, floor - v("acc_disambig"))


class IsvObjective:
    """The ISV objective for one (model, axis, config): trial params in, validation objective out.

    With `cache` the pair activations come from an `ActivationCache`; without, every trial
    re-extracts from scratch. The validation items' residual stream before each trial's first steered
    block is kept (up to `residual_cache_bytes`; 0 turns this off) and reused by later trials.
    """

    def __init__(
        self,
        model: HookedModel,
        axis: Axis,
        config: SearchConfig,
        *,
        items: Sequence[BbqItem] | None = None,
        cache: ActivationCache | None = None,
        data_root: str | Path | None = None,
        baseline: Mapping[str, float] | None = None,
        residual_cache_bytes: int = 2 << 30,
    ) -> None:
        self.model, self.axis, self.config, self.data_root = model, axis, config, data_root
        self.space = config.space.resolve(int(model.cfg.n_layers))
        self.items = list(items) if items is not None else validation_items(axis, config, data_root)
        self.cache = cache
        self.pair_source = study_pair_source(axis, config)
        starts = {
            start_block(hook_name(x, config.hook) for x in layers) for layers in self.space.layer_choices.values()
        } - {None}
        self.residual_cache = (
            ResidualCache(starts, max_bytes=residual_cache_bytes) if starts and residual_cache_bytes > 0 else None
        )  # type: ignore[arg-type]
        self._baseline = dict(baseline) if baseline is not None else None
        self._mmlu: list[Any] | None = None

    # ---- pieces ----------------------------------------------------------------------------
    def vector(self, params: Mapping[str, Any]) -> SteeringVector:
        """The steering vector a trial's params describe, scaled so coefficient 1 is the mean contrast."""
        layers, acts = self.trial_activations(params)
        return vector_from_activations(acts, params["method"], layers, scale=VECTOR_SCALE)

    def trial_activations(self, params: Mapping[str, Any]) -> tuple[tuple[int, ...], PairActivations]:
        """The steered layers of a trial and its contrastive data's activations there (or at more layers); from the cache,
        a pair set is read only as deep as the trial's deepest layer until a trial needs more."""
        layers = (
            self.space.layer_choices[params["layers"]]
            if params["layers"] in self.space.layer_choices
            else parse_layers(params["layers"])
        )
        args = (params["corpus"], int(params["num_sents"]), int(params["persona"]), int(params["template"]))
        if self.cache is not None:
            acts = self.cache.get(*args, layers=layers)
        else:
            pairs = search_pairs(
                *args, tokenizer=self.model.tokenizer, source=self.pair_source, data_root=self.data_root
            )
            acts = pair_activations(self.model, pairs, layers, hook=self.config.hook, max_batch=self.config.max_batch)
        return tuple(layers), acts

    def predictions(
        self, items: Sequence[BbqItem], vector: SteeringVector | None = None, coeff: float = 0.0
    ) -> list[BbqPrediction]:
        """BBQ predictions for `items`, steered by `coeff * vector` if given."""
        return bbq_predictions(
            self.model,
            items,
            vector=vector,
            coeff=coeff,
            scoring=self.config.scoring,
            prompt_format=self.config.prompt_format,
            max_batch=self.config.max_batch,
            residual_cache=self.residual_cache,
        )[1]

    def mmlu_items(self) -> list[Any]:
        """The MMLU dev items of the retention penalty (`config.mmlu_items`, chosen by `config.data_seed`)."""
        if self._mmlu is None:
            from lens_steer.data.mmlu import load_mmlu

            self._mmlu = limit_items(
                load_mmlu("dev", data_root=self.data_root), self.config.mmlu_items, seed=self.config.data_seed
            )
        return self._mmlu

    def mmlu_accuracy(self, vector: SteeringVector | None = None, coeff: float = 0.0) -> float:
        """Accuracy on the penalty's MMLU items."""
        from lens_steer.tasks.mmlu import run_mmlu

        res = run_mmlu(
            self.model,
            self.mmlu_items(),
            scoring=self.config.scoring,
            vector=vector,
            coeff=coeff,
            n_boot=0,
            max_batch=self.config.max_batch,
        )
        return float(res.metrics["micro"]["value"])

    def baseline(self) -> dict[str, float]:
        """Unsteered metrics on the validation items (and MMLU when penalised), computed once."""
        if self._baseline is None:
            m = bbq_metrics(self.predictions(self.items), n_boot=0)
            base = {k: float(x.value) for k, x in m.items()}
            if self.config.mmlu_weight > 0:
                base["mmlu"] = self.mmlu_accuracy()
            base["objective"] = objective_value(base, self.config, base)
            self._baseline = base
        return self._baseline

    # ---- the objective ---------------------------------------------------------------------
    def __call__(self, params: Params, trial: optuna.Trial | None = None) -> float:
        """Score a trial chunk by chunk, reporting the running objective for the pruner."""
        need_base = self.config.objective == "ambig_guarded" or self.config.mmlu_weight > 0
        base = self.baseline() if need_base else None
        layers, acts = self.trial_activations(params)
        vec = vector_from_activations(acts, params["method"], layers, scale=VECTOR_SCALE)
        if trial is not None:  # Braun et al.'s consistency predictor, mean over the steered layers
            by_layer = activation_consistency(acts, layers)
            trial.set_user_attr("consistency", sum(by_layer.values()) / len(by_layer))
        coeff = float(params["coeff"])
        preds: list[BbqPrediction] = []
        size = self.config.chunk_size
        value = float("nan")
        for step, start in enumerate(range(0, len(self.items), size)):
            preds += self.predictions(self.items[start : start + size], vec, coeff)
            metrics = bbq_metrics(preds, n_boot=0)
            value = objective_value(metrics, self.config, base)
            if trial is not None and start + size < len(self.items):
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {len(preds)} items at {value:.4f}")
        if trial is not None:
            metrics = bbq_metrics(preds, n_boot=0)
            for name in ("acc", "acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig"):
                trial.set_user_attr(name, float(metrics[name].value))
        if self.config.mmlu_weight > 0 and base is not None:
            mmlu = self.mmlu_accuracy(vec, coeff)
            value -= self.config.mmlu_weight * max(0.0, base["mmlu"] - mmlu)
            if trial is not None:
                trial.set_user_attr("mmlu", mmlu)
        return value


__all__ = ["IsvObjective", "objective_value", "study_pair_source", "validation_items"]
