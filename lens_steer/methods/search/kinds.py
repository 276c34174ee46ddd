"""The intervention classes the search chooses among, as data: for each kind its parameters (`suggest`), its
default point (the staged search's first stage), and how a trial's parameters become an intervention (`build`).

Kinds (`lens_steer.steering.interventions`): `additive` (one layer, a band or every layer), `ablation`, `ace` and
`leace` (a band or every layer), `gated` and `optimized` (one layer), `model_diff` (every layer; needs the base
model the studied one was fine-tuned from). Contrastive data for the vector-based kinds comes from the activation
cache (a persona corpus or the BBQ corpora); the gated kind's probe, the optimized vector and the model difference
read the axis's BBQ train items."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

from lens_steer.errors import LensSteerError, StudyError
from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.activations import PairActivations, last_token_activations, vector_from_activations
from lens_steer.extract.fit import activation_metadata, fit_ablation, fit_ace, fit_gated, fit_leace
from lens_steer.extract.optimize import OptimizeConfig, fit_optimized_vector
from lens_steer.extract.pair_sources import BBQ_CLOZE, PairSource, train_items
from lens_steer.forward.questions import Question, cloze_prompt
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.specs import layer_label, parse_layers
from lens_steer.steering.interventions import Additive, GatedAdditive, Intervention, ModelDiffEdit
from lens_steer.steering.vectors import hook_name
from lens_steer.tasks.bbq import bbq_predictions

KINDS: tuple[str, ...] = ("additive", "ablation", "ace", "leace", "gated", "optimized", "model_diff")
PROJECTION_KINDS: tuple[str, ...] = ("ablation", "ace", "leace", "model_diff")
SINGLE_LAYER_KINDS: tuple[str, ...] = ("gated", "optimized")
NEEDS_BASE: tuple[str, ...] = ("model_diff",)
Params = dict[str, Any]


def all_layers(n_layers: int) -> tuple[int, ...]:
    """Every block's output."""
    return tuple(range(n_layers))


def layer_choices(
    kind: str, candidates: dict[str, tuple[int, ...]], n_layers: int | None
) -> dict[str, tuple[int, ...]]:
    """`{label: layers}` a kind may edit, from the space's candidates (`SearchSpace.layer_choices`): additive every
    candidate and all layers, projections the bands and all layers, gated and optimized one layer ("all layers"
    only where the model's depth is known)."""
    every = {layer_label(all_layers(n_layers)): all_layers(n_layers)} if n_layers is not None else {}
    singles = {k: v for k, v in candidates.items() if len(v) == 1}
    bands = {k: v for k, v in candidates.items() if len(v) > 1}
    if kind == "additive":
        return {**candidates, **every}
    if kind in PROJECTION_KINDS:
        found = {**every, **bands} if kind != "model_diff" else every
        if not found:
            raise StudyError(f"search space: kind {kind!r} edits a band or every layer; give a band or the model depth")
        return found
    if not singles:
        raise StudyError(f"search space: kind {kind!r} edits one layer; give at least one single-layer candidate")
    return singles


def param_name(kind: str, name: str) -> str:
    """The Optuna name of a kind's own parameter (each kind's layer choices differ, so each has its own)."""
    return name if kind == "additive" else f"{kind}_{name}"


def default_params(kind: str, space: Any, n_layers: int) -> Params:
    """The first stage's point for `kind`: the evaluator-format BBQ pairs (else the first corpus), as many pairs as
    the space allows, mean difference, a middle layer (or every layer), coefficient 1 (one mean contrast)."""
    corpus = BBQ_CLOZE if BBQ_CLOZE in space.corpora else space.corpora[0]
    choices = layer_choices(kind, space.layer_choices, n_layers)
    if kind in PROJECTION_KINDS or len(choices) == 1:
        layers = next(iter(choices))
    else:
        singles = [k for k, v in choices.items() if len(v) == 1] or list(choices)
        layers = min(singles, key=lambda k: abs(choices[k][0] - n_layers // 2))
    params: Params = {
        "kind": kind,
        "corpus": corpus,
        "num_sents": space.num_sents[1],
        "persona": space.personas[0],
        "template": space.templates[0],
        "method": "mean_diff" if "mean_diff" in space.methods else space.methods[0],
        "layers": layers,
    }
    if kind in ("additive", "gated"):
        lo, hi, step = space.coeff
        k = min(max(round((1.0 - lo) / step), 0), round((hi - lo) / step))  # the grid point nearest +1
        params["coeff"] = round(lo + k * step, 10)
    return params


def trial_values(params: Params) -> dict[str, Any]:
    """The Optuna parameter values that make a trial draw `params` (for `study.enqueue_trial`)."""
    kind = params["kind"]
    out = {"kind": kind, param_name(kind, "layers"): params["layers"]}
    for name in ("corpus", "num_sents", "persona", "template", "method"):
        if uses(kind, name):
            out[name] = params[name]
    if "coeff" in params:
        out[param_name(kind, "coeff")] = params["coeff"]
    return out


def uses(kind: str, name: str) -> bool:
    """Whether a kind's intervention depends on a shared parameter (pairs, persona, aggregator)."""
    if name in ("corpus", "persona", "template"):
        return kind not in ("optimized", "model_diff")
    if name == "method":
        return kind in ("additive", "gated")
    return True  # num_sents: pairs or train items


def suggest(trial: optuna.Trial, space: Any, n_layers: int | None) -> Params:
    """Draw the kind, then that kind's parameters (shared ones under shared names, layers and coefficients under
    the kind's own)."""
    kind = trial.suggest_categorical("kind", list(space.kinds))
    n_lo, n_hi, n_st = space.num_sents
    c_lo, c_hi, c_st = space.coeff
    params: Params = {"kind": kind}
    if uses(kind, "corpus"):
        params["corpus"] = trial.suggest_categorical("corpus", list(space.corpora))
    params["num_sents"] = trial.suggest_int("num_sents", n_lo, n_hi, step=n_st)
    if uses(kind, "persona"):
        params["persona"] = trial.suggest_categorical("persona", list(space.personas))
        params["template"] = trial.suggest_categorical("template", list(space.templates))
    if uses(kind, "method"):
        params["method"] = trial.suggest_categorical("method", list(space.methods))
    choices = layer_choices(kind, space.layer_choices, n_layers)
    params["layers"] = trial.suggest_categorical(param_name(kind, "layers"), list(choices))
    if kind in ("additive", "gated"):
        params["coeff"] = round(trial.suggest_float(param_name(kind, "coeff"), c_lo, c_hi, step=c_st), 10)
    for name in ("corpus", "persona", "template", "method"):
        params.setdefault(name, None)
    return params


@dataclasses.dataclass
class KindContext:
    """What building an intervention needs besides a trial's parameters, with what is read once and reused."""

    model: HookedModel
    cache: ActivationCache
    pair_source: PairSource
    n_layers: int
    hook: str = "hook_resid_post"
    prompt_format: str = "reference"
    scoring: str = "cloze"
    max_batch: int = 16
    data_root: str | Path | None = None
    base_loader: Callable[[], HookedModel] | None = None
    seed: int = 0
    optimize: OptimizeConfig = OptimizeConfig()
    memo: dict[Any, Any] = dataclasses.field(default_factory=dict)

    def layers_of(self, kind: str, label: str, candidates: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The layers a label names: one of the kind's choices, or a layer list given outright ("2,3", "13-25")."""
        choices = layer_choices(kind, candidates, self.n_layers)
        if label in choices:
            return choices[label]
        try:
            layers = tuple(parse_layers(label, "layers"))
        except LensSteerError:
            raise StudyError(
                f"kind {kind!r} cannot edit layers {label!r}; choose one of {', '.join(choices)}"
            ) from None
        bad = [x for x in layers if not 0 <= x < self.n_layers]
        if bad or (kind in SINGLE_LAYER_KINDS and len(layers) != 1):
            raise StudyError(f"kind {kind!r} cannot edit layers {label!r}; choose one of {', '.join(choices)}")
        return layers

    def items(self, n: int) -> list[Any]:
        """The first `n` BBQ train items of the axis (data-seed order)."""
        root = None if self.data_root is None else str(self.data_root)
        return list(train_items(self.pair_source, root))[:n]

    def prompts(self, items: Sequence[Any]) -> list[str]:
        """The cloze prompts the evaluator scores for `items`."""
        tok = self.model.tokenizer
        return [
            cloze_prompt(Question(i.context, i.question, tuple(i.answers)), self.prompt_format, tok)[0] for i in items
        ]

    def gate_data(self, n: int, layer: int) -> tuple[Any, list[int]]:
        """The last prompt token's activations of `n` train items at `layer`, and whether the model's own answer to
        each is a wrong stereotyped one (the gate's labels, FairSteer's detector)."""
        key = ("gate", n, layer)
        if key not in self.memo:
            items = self.items(n)
            if ("gate_labels", n) not in self.memo:
                _, preds = bbq_predictions(
                    self.model, items, scoring=self.scoring, prompt_format=self.prompt_format, max_batch=self.max_batch
                )
                self.memo[("gate_labels", n)] = [int(p.pred_is_biased and p.pred != p.label) for p in preds]
            acts = last_token_activations(
                self.model, self.prompts(items), [layer], hook=self.hook, prepend_bos=False, max_batch=self.max_batch
            )
            self.memo[key] = (acts[layer], self.memo[("gate_labels", n)])
        return self.memo[key]

    def base_model(self) -> HookedModel:
        if "base" not in self.memo:
            if self.base_loader is None:
                raise StudyError("kind 'model_diff' needs the base model the studied one was fine-tuned from")
            self.memo["base"] = self.base_loader()
        return self.memo["base"]


def build(params: Params, ctx: KindContext, candidates: dict[str, tuple[int, ...]]) -> Intervention:
    """The intervention a trial's parameters describe (kind "additive" when absent: studies before kinds)."""
    kind = params.get("kind") or "additive"
    layers = ctx.layers_of(kind, params["layers"], candidates)
    n = int(params["num_sents"])
    if kind == "optimized":
        key = ("optimized", n, layers[0])
        if key not in ctx.memo:
            items = ctx.items(n)
            data = [(Question(i.context, i.question, tuple(i.answers)), int(i.label)) for i in items]
            prov = {"axis": ctx.pair_source.axis, "source": ctx.pair_source.to_json(), "n_items": len(items)}
            cfg = dataclasses.replace(ctx.optimize, seed=ctx.seed)
            ctx.memo[key] = fit_optimized_vector(
                ctx.model, data, layers[0], cfg, prompt_format=ctx.prompt_format, provenance=prov
            )
        return ctx.memo[key]
    if kind == "model_diff":
        key = ("model_diff", n)
        if key not in ctx.memo:
            ctx.memo[key] = model_difference(ctx, n)
        return ctx.memo[key]
    acts = ctx.cache.get(params["corpus"], n, int(params["persona"] or 0), int(params["template"] or 0), layers=layers)
    if kind in ("additive", "gated"):
        vec = vector_from_activations(acts, params["method"], layers, scale="contrast")
        if kind == "additive":
            return Additive.of(vec, float(params["coeff"]))
        probe_x, labels = ctx.gate_data(n, layers[0])
        if (
            len(set(labels)) < 2
        ):  # the model gives no wrong stereotyped answer here (or only those): a gate that never fires
            weight = {layers[0]: torch.zeros(vec.metadata.d_model)}
            bias = {layers[0]: -1.0 if not any(labels) else 1.0}
            return GatedAdditive(vec.metadata, vec, float(params["coeff"]), weight, bias)
        return fit_gated(vec, float(params["coeff"]), {layers[0]: probe_x}, labels, seed=ctx.seed)
    fit = {"ablation": fit_ablation, "ace": fit_ace, "leace": fit_leace}[kind]
    return fit(acts, layers)


def model_difference(ctx: KindContext, n: int) -> ModelDiffEdit:
    """ACE along the mean difference between the studied model's and its base model's activations at the last
    prompt token of `n` train items, at every layer where they differ, the base model's mean as reference."""
    layers = list(all_layers(ctx.n_layers))
    prompts = ctx.prompts(ctx.items(n))
    ours = last_token_activations(ctx.model, prompts, layers, hook=ctx.hook, max_batch=ctx.max_batch)
    theirs = last_token_activations(ctx.base_model(), prompts, layers, hook=ctx.hook, max_batch=ctx.max_batch)
    dirs, ref = {}, {}
    for layer in layers:
        diff = ours[layer].mean(0) - theirs[layer].mean(0)
        if float(diff.norm()) > 1e-4 * float(theirs[layer].mean(0).norm()):  # blocks the fine-tune left alone: no edit
            dirs[layer], ref[layer] = diff, theirs[layer].mean(0)
    if not dirs:
        raise StudyError("the model and its base model do not differ at any layer; model_diff has nothing to edit")
    ident = model_identity(ctx.model)
    acts = PairActivations(
        {},
        {},
        ctx.hook,
        ident.name,
        ident.d_model,
        dict(ident.processing),
        {"builder": "model_diff", "axis": ctx.pair_source.axis, "n_prompts": len(prompts)},
    )
    return ModelDiffEdit(activation_metadata(acts, "model_diff"), dirs, ref)


def hook_points(intervention: Intervention) -> list[str]:
    """The hook points an intervention edits (for reports)."""
    return [hook_name(layer, intervention.metadata.hook) for layer in intervention.layers]


__all__ = [
    "KINDS",
    "NEEDS_BASE",
    "PROJECTION_KINDS",
    "KindContext",
    "build",
    "default_params",
    "layer_choices",
    "model_difference",
    "param_name",
    "suggest",
    "trial_values",
]
