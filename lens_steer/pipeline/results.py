"""The `results.json` schema: the dataclasses `reproduce` writes and the report reads.

`Results.from_json` reads the file's object and `Results.to_json` writes it back unchanged (key order kept). A
stage that did not run is absent (None here; the report says "not run"); a stage that is there but lacks a
part, or holds a part of the wrong kind, is refused with a one-line `ResultsError` naming that part (e.g.
`ensemble.in_distribution.age.steered.isv.vs_base`). Parts no report reads in detail (configurations, the
search's parameters, the sweep's rows) stay plain JSON; the ground truth is lens_steer.pipeline.ground_truth's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from lens_steer.pipeline.ground_truth import GroundTruth
from lens_steer.pipeline.json_read import as_dict as _dict  # noqa: I001
from lens_steer.pipeline.json_read import as_list as _list
from lens_steer.pipeline.json_read import each as _each
from lens_steer.pipeline.json_read import get as _get
from lens_steer.pipeline.json_read import integer as _int
from lens_steer.pipeline.json_read import metric, opt_dict, opt_num
from lens_steer.pipeline.json_read import metric_json as _metric_json
from lens_steer.pipeline.json_read import num as _num
from lens_steer.pipeline.json_read import obj as _obj
from lens_steer.pipeline.json_read import string as _str
from lens_steer.pipeline.results_entries import EnsembleResults
from lens_steer.stats import Metric

CAPABILITY_METRICS: tuple[str, ...] = (
    "acc",
    "acc_ambig",
    "acc_disambig",
    "unknown_rate_ambig",
    "unknown_rate_disambig",
    "bias_ambig",
    "bias_disambig",
)


@dataclasses.dataclass(frozen=True)
class Capability:
    """How the unsteered model does on one axis's test items: `CAPABILITY_METRICS` and the item count."""

    metrics: dict[str, Metric]
    n: int

    @classmethod
    def from_json(cls, x: Any, where: str) -> Capability:
        return cls({k: _get(x, k, where, metric) for k in CAPABILITY_METRICS}, _get(x, "n", where, _int))

    def to_json(self) -> dict[str, Any]:
        return {**{k: _metric_json(m) for k, m in self.metrics.items()}, "n": self.n}


@dataclasses.dataclass(frozen=True)
class IsvSummary:
    """One axis's finished ISV search as the results record it: its additive ISV's value, params and coefficient
    (None when no additive trial finished; the study's best of any kind is in `chosen`)."""

    study: str
    best_value: float | None
    params: dict[str, Any] | None
    coeff: float | None
    n_trials: int
    history: list[float | None]  # objective of each finished trial in order (None: pruned)
    dir: str
    baseline: dict[str, Any]

    @classmethod
    def from_json(cls, x: Any, where: str) -> IsvSummary:
        hist = [None if v is None else _num(v, f"{where}.history") for v in _get(x, "history", where, _list)]
        return cls(
            _get(x, "study", where, _str),
            _get(x, "best_value", where, opt_num),
            _get(x, "params", where, opt_dict),
            _get(x, "coeff", where, opt_num),
            _get(x, "n_trials", where, _int),
            hist,
            _get(x, "dir", where, _str),
            _get(x, "baseline", where, _dict),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SweepStage:
    """The layer x coefficient sweep of one axis on its validation split."""

    axis: str
    layers: list[int]
    coeffs: list[float]
    metric: str
    baseline: dict[str, Any]
    rows: list[dict[str, Any]]
    config: dict[str, Any]

    @classmethod
    def from_json(cls, x: Any, where: str = "sweep") -> SweepStage:
        return cls(
            _get(x, "axis", where, _str),
            [_int(v, f"{where}.layers") for v in _get(x, "layers", where, _list)],
            [_num(v, f"{where}.coeffs") for v in _get(x, "coeffs", where, _list)],
            _get(x, "metric", where, _str),
            _get(x, "baseline", where, _dict),
            [dict(_obj(r, f"{where}.rows")) for r in _get(x, "rows", where, _list)],
            _get(x, "config", where, _dict),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GeometryStage:
    """Axis x axis cosine similarity of per-axis steering directions at one layer."""

    layer: int
    axes: list[str]
    cosine: list[list[float]]
    random_reference: float
    num_sents: int
    method: str
    persona: int
    template: int

    @classmethod
    def from_json(cls, x: Any, where: str = "geometry") -> GeometryStage:
        cos = [
            [_num(v, f"{where}.cosine") for v in _list(row, f"{where}.cosine")]
            for row in _get(x, "cosine", where, _list)
        ]
        return cls(
            _get(x, "layer", where, _int),
            [_str(a, f"{where}.axes") for a in _get(x, "axes", where, _list)],
            cos,
            _get(x, "random_reference", where, _num),
            _get(x, "num_sents", where, _int),
            _get(x, "method", where, _str),
            _get(x, "persona", where, _int),
            _get(x, "template", where, _int),
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


META_FIELDS: tuple[str, ...] = (
    "model",
    "budget",
    "seconds",
    "stage_seconds",
    "lens_steer_version",
    "scoring",
    "prompt_format",
    "split_seed",
    "storage",
    "bias_variant",
    "budget_detail",
)


@dataclasses.dataclass(frozen=True)
class Meta:
    """How the run was made: model, budget, timing, version, scoring, prompt format, split seed, storage,
    bias-score variant, the budget's definition, and the organism's card summary when the model is one."""

    model: str
    budget: str
    seconds: float
    stage_seconds: dict[str, float]
    lens_steer_version: str
    scoring: str
    prompt_format: str
    split_seed: int
    storage: str
    bias_variant: str
    budget_detail: dict[str, Any]
    organism: dict[str, Any] | None = None
    # how the per-axis vectors were chosen: sve-v1 (Optuna search) or v2 (the later paper's); absent before
    # either existed
    protocol: str = "sve-v1"
    splits: str = "ours"  # ours (seeded) or v2 (the later paper's exact files)

    @classmethod
    def from_json(cls, x: Any, where: str = "meta") -> Meta:
        obj = _obj(x, where)
        kinds = {
            "seconds": _num,
            "split_seed": _int,
            "stage_seconds": lambda v, w: _each(v, w, _num),
            "budget_detail": lambda v, w: dict(_obj(v, w)),
        }
        values = {k: _get(obj, k, where, kinds.get(k, _str)) for k in META_FIELDS}
        org = obj.get("organism")
        extra = {k: _str(obj[k], f"{where}.{k}") for k in ("protocol", "splits") if k in obj}
        return cls(**values, organism=None if org is None else dict(_obj(org, f"{where}.organism")), **extra)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in META_FIELDS}
        if self.organism is not None:
            out["organism"] = self.organism
        if (self.protocol, self.splits) != ("sve-v1", "ours"):
            out.update(protocol=self.protocol, splits=self.splits)
        return out


STAGES: tuple[str, ...] = ("meta", "capability", "isv", "ensemble", "sweep", "geometry", "ground_truth")


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything `reproduce` found; a stage that did not run is None."""

    meta: Meta | None = None
    capability: dict[str, Capability] | None = None
    isv: dict[str, IsvSummary] | None = None
    ensemble: EnsembleResults | None = None
    sweep: SweepStage | None = None
    geometry: GeometryStage | None = None
    ground_truth: GroundTruth | None = None  # on a bias model organism (lens_steer.pipeline.ground_truth)

    @classmethod
    def from_json(cls, x: Any) -> Results:
        """Read results.json's object; absent (or empty) stages are None, a malformed one is a ResultsError naming the
        part."""
        obj = _obj(x, "the file")
        readers: dict[str, Callable[[Any, str], Any]] = {
            "meta": Meta.from_json,
            "capability": lambda v, w: _each(v, w, Capability.from_json),
            "isv": lambda v, w: _each(v, w, IsvSummary.from_json),
            "ensemble": EnsembleResults.from_json,
            "sweep": SweepStage.from_json,
            "geometry": GeometryStage.from_json,
            "ground_truth": lambda v, w: GroundTruth.from_json(_obj(v, w)),
        }
        return cls(**{k: readers[k](obj[k], k) if obj.get(k) else None for k in STAGES})

    def to_json(self) -> dict[str, Any]:
        """The JSON object of results.json (stages that did not run are left out)."""
        out: dict[str, Any] = {}
        for k in STAGES:
            value = getattr(self, k)
            if value is None:
                continue
            if isinstance(value, dict):
                out[k] = {a: v.to_json() if hasattr(v, "to_json") else v for a, v in value.items()}
            else:
                out[k] = value.to_json()
        return out


def finite(x: float | None) -> bool:
    """Whether `x` is a finite number (intervals computed with n_boot=0 hold NaN)."""
    return x is not None and math.isfinite(x)
