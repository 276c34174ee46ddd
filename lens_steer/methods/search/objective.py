"""The ISV search's objective: trial params in, the BBQ validation objective out. Its items (`validation_items`,
chosen by the config's data seed), the objective's formula (`objective_value`), and `IsvObjective`, which reads
each trial's contrastive activations from an `ActivationCache` and reuses the validation items' residual stream
before the first steered block across trials (`lens_steer.forward.residual_cache.ResidualCache`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from lens_steer.axes import Axis
from lens_steer.data.bbq import BbqItem
from lens_steer.data.select import limit_items, select
from lens_steer.errors import StudyError
from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.consistency import activation_consistency
from lens_steer.extract.pair_sources import PairSource
from lens_steer.forward.residual_cache import ResidualCache, start_block
from lens_steer.methods.search.kinds import KindContext, build, layer_choices
from lens_steer.methods.search.space import Params, SearchConfig
from lens_steer.model.load import HookedModel
from lens_steer.steering.interventions import Additive, Intervention
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
    """The search's objective for one (model, axis, config): trial params in, validation objective out.

    A trial's params name an intervention kind and its parameters (`kinds`); pair activations come from an
    `ActivationCache` (an in-memory one when none is given). The validation items' residual stream before each
    trial's first edited block is kept (up to `residual_cache_bytes`; 0 turns this off) and reused by later
    trials. `base_loader` gives the base model for the `model_diff` kind. Under the `pareto` objective a trial's
    value is (ambiguous accuracy, disambiguated accuracy, minus the drift on neutral text)."""

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
        base_loader: Callable[[], HookedModel] | None = None,
    ) -> None:
        self.model, self.axis, self.config, self.data_root = model, axis, config, data_root
        n_layers = int(model.cfg.n_layers)
        self.space = config.space.resolve(n_layers)
        self.items = list(items) if items is not None else validation_items(axis, config, data_root)
        self.pair_source = study_pair_source(axis, config)
        self.cache = cache or ActivationCache(
            model,
            self.space.all_layers,
            hook=config.hook,
            data_root=data_root,
            max_batch=config.max_batch,
            source=self.pair_source,
        )
        self.kinds = KindContext(
            model,
            self.cache,
            self.pair_source,
            n_layers,
            hook=config.hook,
            prompt_format=config.prompt_format,
            scoring=config.scoring,
            max_batch=config.max_batch,
            data_root=data_root,
            base_loader=base_loader,
            seed=config.data_seed,
        )
        choices = [c for k in self.space.kinds for c in layer_choices(k, self.space.layer_choices, n_layers).values()]
        starts = {start_block(hook_name(x, config.hook) for x in layers) for layers in choices} - {None}
        self.residual_cache = (
            ResidualCache(starts, max_bytes=residual_cache_bytes)  # type: ignore[arg-type]
            if starts and residual_cache_bytes > 0
            else None
        )
        self._baseline = dict(baseline) if baseline is not None else None
        self._mmlu: list[Any] | None = None
        self._drift_base: list[Any] | None = None

    # ---- pieces ----------------------------------------------------------------------------
    def intervention(self, params: Mapping[str, Any]) -> Intervention:
        """The intervention a trial's params describe (vectors scaled so coefficient 1 is the mean contrast)."""
        return build(dict(params), self.kinds, self.space.layer_choices)

    def vector(self, params: Mapping[str, Any]) -> SteeringVector:
        """The steering vector of an additive trial's params."""
        iv = self.intervention(params)
        if not isinstance(iv, Additive):
            raise StudyError(f"a {iv.kind} trial has no steering vector; use intervention()")
        return iv.vector

    def predictions(self, items: Sequence[BbqItem], intervention: Intervention | None = None) -> list[BbqPrediction]:
        """BBQ predictions for `items` under `intervention` (unsteered without one)."""
        return bbq_predictions(
            self.model,
            items,
            intervention=intervention,
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

    def mmlu_accuracy(self, intervention: Intervention | None = None) -> float:
        """Accuracy on the penalty's MMLU items."""
        from lens_steer.tasks.mmlu import run_mmlu

        res = run_mmlu(
            self.model,
            self.mmlu_items(),
            scoring=self.config.scoring,
            intervention=intervention,
            n_boot=0,
            max_batch=self.config.max_batch,
        )
        return float(res.metrics["micro"]["value"])

    def drift(self, intervention: Intervention) -> float:
        """Mean KL (nats per token) of the unsteered from the steered next-token distribution on neutral texts
        (`config.drift_texts` prompts of the `generic` corpus)."""
        from lens_steer.extract.pairs import load_corpus
        from lens_steer.tasks.drift import mean_kl, next_token_logprobs

        texts = load_corpus("generic", data_root=self.data_root)[: self.config.drift_texts]
        if self._drift_base is None:
            self._drift_base = next_token_logprobs(self.model, texts)
        return mean_kl(self._drift_base, next_token_logprobs(self.model, texts, intervention))

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
    def __call__(self, params: Params, trial: optuna.Trial | None = None) -> float | tuple[float, float, float]:
        """Score a trial chunk by chunk, reporting the running objective for the pruner (single objectives)."""
        pareto = self.config.objective == "pareto"
        need_base = self.config.objective in ("ambig_guarded", "pareto") or self.config.mmlu_weight > 0
        base = self.baseline() if need_base else None
        iv = self.intervention(params)
        if trial is not None and params.get("corpus") and (params.get("kind") or "additive") in PAIR_KINDS:
            layers = iv.layers
            acts = self.cache.get(
                params["corpus"],
                int(params["num_sents"]),
                int(params.get("persona") or 0),
                int(params.get("template") or 0),
                layers=layers,
            )
            by_layer = activation_consistency(acts, layers)  # Braun et al.'s consistency predictor
            trial.set_user_attr("consistency", sum(by_layer.values()) / len(by_layer))
        preds: list[BbqPrediction] = []
        size = self.config.chunk_size
        value = float("nan")
        for step, start in enumerate(range(0, len(self.items), size)):
            preds += self.predictions(self.items[start : start + size], iv)
            metrics = bbq_metrics(preds, n_boot=0)
            value = objective_value(metrics, self.config, base)
            if trial is not None and not pareto and start + size < len(self.items):
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {len(preds)} items at {value:.4f}")
        metrics = bbq_metrics(preds, n_boot=0)
        if trial is not None:
            for name in ("acc", "acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig"):
                trial.set_user_attr(name, float(metrics[name].value))
            trial.set_user_attr("intervention", iv.describe())
        if self.config.mmlu_weight > 0 and base is not None:
            mmlu = self.mmlu_accuracy(iv)
            value -= self.config.mmlu_weight * max(0.0, base["mmlu"] - mmlu)
            if trial is not None:
                trial.set_user_attr("mmlu", mmlu)
        if pareto:
            kl = self.drift(iv)
            if trial is not None:
                trial.set_user_attr("drift_kl", kl)
                trial.set_user_attr("ambig_guarded", value)
            return float(metrics["acc_ambig"].value), float(metrics["acc_disambig"].value), -kl
        return value


PAIR_KINDS: tuple[str, ...] = ("additive", "ablation", "ace", "leace", "gated")  # built from contrastive pairs


__all__ = ["IsvObjective", "objective_value", "study_pair_source", "validation_items"]
