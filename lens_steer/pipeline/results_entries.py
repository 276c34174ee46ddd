"""The per-method parts of `results.json`: paired comparisons, random controls, steered entries, the BBQ and
MMLU blocks of the test stage (read by `lens_steer.pipeline.results`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lens_steer.errors import ResultsError
from lens_steer.pipeline.json_read import FIX, metric
from lens_steer.pipeline.json_read import as_dict as _dict  # noqa: I001
from lens_steer.pipeline.json_read import as_list as _list
from lens_steer.pipeline.json_read import each as _each
from lens_steer.pipeline.json_read import get as _get
from lens_steer.pipeline.json_read import integer as _int
from lens_steer.pipeline.json_read import metric_json as _metric_json
from lens_steer.pipeline.json_read import need as _need
from lens_steer.pipeline.json_read import num as _num
from lens_steer.pipeline.json_read import obj as _obj
from lens_steer.pipeline.json_read import opt_num as _opt_num
from lens_steer.pipeline.json_read import string as _str
from lens_steer.stats import Metric


@dataclasses.dataclass(frozen=True)
class Triple:
    """One metric of a paired comparison: the baseline's, the steered run's and their difference (steered - base)."""

    base: Metric
    steered: Metric
    diff: Metric

    @classmethod
    def from_json(cls, x: Any, where: str) -> Triple:
        return cls(*(_get(x, k, where, metric) for k in ("base", "steered", "diff")))

    def to_json(self) -> dict[str, Any]:
        return {"base": _metric_json(self.base), "steered": _metric_json(self.steered), "diff": _metric_json(self.diff)}


@dataclasses.dataclass(frozen=True)
class McNemar:
    """The exact McNemar test of a paired comparison: p and the discordant counts (gained: base wrong, steered
    right)."""

    p: float
    gained: int
    lost: int

    @classmethod
    def from_json(cls, x: Any, where: str) -> McNemar:
        return cls(_get(x, "p", where, _num), _get(x, "gained", where, _int), _get(x, "lost", where, _int))

    def to_json(self) -> dict[str, Any]:
        return {"p": self.p, "gained": self.gained, "lost": self.lost}


@dataclasses.dataclass(frozen=True)
class Condition:
    """A paired comparison over one context condition (or all items): item count, each metric's triple, McNemar."""

    n: int
    metrics: dict[str, Triple]  # "acc", "unknown_rate", and for the conditions "bias", "unknown_margin", ...
    mcnemar: McNemar | None

    @classmethod
    def from_json(cls, x: Any, where: str) -> Condition:
        obj = _obj(x, where)
        _need(obj, "acc", where)
        triples = {k: Triple.from_json(v, f"{where}.{k}") for k, v in obj.items() if k not in ("n", "mcnemar")}
        mc = obj.get("mcnemar")
        return cls(
            _get(obj, "n", where, _int), triples, None if mc is None else McNemar.from_json(mc, f"{where}.mcnemar")
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, **{k: t.to_json() for k, t in self.metrics.items()}}
        if self.mcnemar is not None:
            out["mcnemar"] = self.mcnemar.to_json()
        return out

    @property
    def acc(self) -> Triple:
        """Accuracy."""
        return self.metrics["acc"]

    def get(self, name: str) -> Triple | None:
        """The triple of `name` ("unknown_rate", "bias", ...), or None when this condition has none."""
        return self.metrics.get(name)


@dataclasses.dataclass(frozen=True)
class Paired:
    """`lens_steer.tasks.metrics.paired_comparison`'s output: steered vs base on the same items, overall and per
    condition."""

    n: int
    bias_variant: str
    overall: Condition
    ambig: Condition
    disambig: Condition

    @classmethod
    def from_json(cls, x: Any, where: str) -> Paired:
        conds = (_get(x, c, where, Condition.from_json) for c in ("overall", "ambig", "disambig"))
        return cls(_get(x, "n", where, _int), _get(x, "bias_variant", where, _str), *conds)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "bias_variant": self.bias_variant,
            "overall": self.overall.to_json(),
            "ambig": self.ambig.to_json(),
            "disambig": self.disambig.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class Steerability:
    """lens_steer.methods.steerability's summary of one result against the baseline, per item: the mean margin change,
    the share of items moved the wrong way (overall and per context condition) with intervals, a histogram of the
    changes, the steerability-bias check on disambiguated items (plain JSON), and the per-item file."""

    n: int
    mean_change: Metric
    median_change: float
    wrong_way_share: Metric
    wrong_way_share_by_condition: dict[str, Metric]
    histogram: dict[str, list[float]]  # "counts" (len k) and "edges" (len k + 1)
    bias: dict[str, Any]
    items_file: str | None = None

    @classmethod
    def from_json(cls, x: Any, where: str) -> Steerability:
        obj = _obj(x, where)
        hist = _get(obj, "histogram", where, _dict)
        counts, edges = (
            _get(hist, k, f"{where}.histogram", lambda v, w: [_num(c, w) for c in _list(v, w)])
            for k in ("counts", "edges")
        )
        if len(edges) != len(counts) + 1:
            raise ResultsError(
                f"results.json: {where}.histogram has {len(counts)} counts but {len(edges)} edges; {FIX}"
            )
        f = obj.get("items_file")
        return cls(
            _get(obj, "n", where, _int),
            _get(obj, "mean_change", where, metric),
            _get(obj, "median_change", where, _num),
            _get(obj, "wrong_way_share", where, metric),
            _get(obj, "wrong_way_share_by_condition", where, _metrics),
            {"counts": counts, "edges": edges},
            _get(obj, "bias", where, _dict),
            None if f is None else _str(f, f"{where}.items_file"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "mean_change": _metric_json(self.mean_change),
            "median_change": self.median_change,
            "wrong_way_share": _metric_json(self.wrong_way_share),
            "wrong_way_share_by_condition": {k: _metric_json(m) for k, m in self.wrong_way_share_by_condition.items()},
            "histogram": {"counts": [int(c) for c in self.histogram["counts"]], "edges": self.histogram["edges"]},
            "bias": self.bias,
        }
        if self.items_file is not None:
            out["items_file"] = self.items_file
        return out


@dataclasses.dataclass(frozen=True)
class Control:
    """A matched random control (same norms, layers and coefficient): its comparison with the baseline and with the
    steered run."""

    seed: int
    vs_base: Paired
    steered_vs_control: Paired

    @classmethod
    def from_json(cls, x: Any, where: str) -> Control:
        return cls(
            _get(x, "seed", where, _int),
            _get(x, "vs_base", where, Paired.from_json),
            _get(x, "steered_vs_control", where, Paired.from_json),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "vs_base": self.vs_base.to_json(),
            "steered_vs_control": self.steered_vs_control.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class Steered:
    """One steered BBQ result: coefficient, paired comparison with the baseline, its controls, and the direct
    paired tests between steered runs where they were made (SVE vs ISV, merged vs SVE)."""

    coeff: float
    vs_base: Paired
    controls: tuple[Control, ...]
    control_mean_acc: float | None = None
    beats_controls: bool | None = None
    vs_isv: Paired | None = None
    vs_sve: Paired | None = None
    coeff_chosen_without: str | None = None
    steerability: Steerability | None = None  # absent in results written before per-item steerability
    intervention: dict[str, Any] | None = None  # an intervention's kind, layers and parameters (not a plain vector)

    @property
    def gain(self) -> Metric:
        """The accuracy change over the baseline with its paired interval."""
        return self.vs_base.overall.acc.diff

    @classmethod
    def from_json(cls, x: Any, where: str) -> Steered:
        obj = _obj(x, where)
        controls = tuple(
            Control.from_json(c, f"{where}.controls[{i}]") for i, c in enumerate(_get(obj, "controls", where, _list))
        )
        beats = _need(obj, "beats_controls", where)
        paired = {
            k: Paired.from_json(obj[k], f"{where}.{k}") if obj.get(k) is not None else None
            for k in ("vs_isv", "vs_sve")
        }
        without, steer = obj.get("coeff_chosen_without"), obj.get("steerability")
        return cls(
            _get(obj, "coeff", where, _num),
            _get(obj, "vs_base", where, Paired.from_json),
            controls,
            _get(obj, "control_mean_acc", where, _opt_num),
            None if beats is None else bool(beats),
            paired["vs_isv"],
            paired["vs_sve"],
            None if without is None else _str(without, f"{where}.coeff_chosen_without"),
            None if steer is None else Steerability.from_json(steer, f"{where}.steerability"),
            None if obj.get("intervention") is None else _dict(obj["intervention"], f"{where}.intervention"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "coeff": self.coeff,
            "vs_base": self.vs_base.to_json(),
            "controls": [c.to_json() for c in self.controls],
            "control_mean_acc": self.control_mean_acc,
            "beats_controls": self.beats_controls,
        }
        if self.steerability is not None:
            out["steerability"] = self.steerability.to_json()
        for key in ("vs_isv", "vs_sve"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json()
        if self.coeff_chosen_without is not None:
            out["coeff_chosen_without"] = self.coeff_chosen_without
        if self.intervention is not None:
            out["intervention"] = dict(self.intervention)
        return out


def _metrics(x: Any, where: str) -> dict[str, Metric]:
    return _each(x, where, metric)


@dataclasses.dataclass(frozen=True)
class BbqBlock:
    """One target's BBQ test results (an axis, or an out-of-distribution category with its data source)."""

    n: int
    baseline: dict[str, Metric]  # lens_steer.tasks.metrics.bbq_metrics of the unsteered model
    # by method: vectors ("isv", "sve", "sve_norm", "merged", "sve_loo", ...) and baselines
    # ("prompting", ...; no controls)
    steered: dict[str, Steered]
    source: str | None = None
    has_source: bool = False  # out-of-distribution blocks record their source (null when no item was selected)
    chosen_kind: str | None = None  # the kind the axis's search chose ("none": doing nothing beat every trial)

    @classmethod
    def from_json(cls, x: Any, where: str) -> BbqBlock:
        obj = _obj(x, where)
        src = obj.get("source")
        return cls(
            _get(obj, "n", where, _int),
            _get(obj, "baseline", where, _metrics),
            _get(obj, "steered", where, lambda v, w: _each(v, w, Steered.from_json)),
            None if src is None else _str(src, f"{where}.source"),
            "source" in obj,
            None if obj.get("chosen_kind") is None else _str(obj["chosen_kind"], f"{where}.chosen_kind"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n}
        if self.has_source:
            out["source"] = self.source
        out = {
            **out,
            "baseline": {k: _metric_json(m) for k, m in self.baseline.items()},
            "steered": {k: s.to_json() for k, s in self.steered.items()},
        }
        if self.chosen_kind is not None:
            out["chosen_kind"] = self.chosen_kind
        return out


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An evaluation that could not run, with the reason (e.g. an OOD category without data)."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"skipped": self.reason}


def _ood(x: Any, where: str) -> BbqBlock | Skipped:
    obj = _obj(x, where)
    return Skipped(_str(obj["skipped"], f"{where}.skipped")) if "skipped" in obj else BbqBlock.from_json(obj, where)


@dataclasses.dataclass(frozen=True)
class MmluEntry:
    """MMLU with one steering vector: accuracy, change against the baseline with McNemar's counts, and its controls."""

    coeff: float
    acc: Metric
    diff: float | None = None
    mcnemar: McNemar | None = None
    controls: tuple[MmluEntry, ...] | None = None
    seed: int | None = None  # set on a control
    note: str | None = None  # how a baseline's entry differs (e.g. its prompt format)

    @classmethod
    def from_json(cls, x: Any, where: str) -> MmluEntry:
        obj = _obj(x, where)
        mc, ctrls, seed, note = obj.get("mcnemar"), obj.get("controls"), obj.get("seed"), obj.get("note")
        return cls(
            _get(obj, "coeff", where, _num),
            _get(obj, "acc", where, metric),
            _opt_num(obj.get("diff"), f"{where}.diff"),
            None if mc is None else McNemar.from_json(mc, f"{where}.mcnemar"),
            None
            if ctrls is None
            else tuple(
                MmluEntry.from_json(c, f"{where}.controls[{i}]")
                for i, c in enumerate(_list(ctrls, f"{where}.controls"))
            ),
            None if seed is None else _int(seed, f"{where}.seed"),
            None if note is None else _str(note, f"{where}.note"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.seed is None else {"seed": self.seed}
        out.update(coeff=self.coeff, acc=_metric_json(self.acc))
        if self.diff is not None:
            out["diff"] = self.diff
        if self.mcnemar is not None:
            out["mcnemar"] = self.mcnemar.to_json()
        if self.controls is not None:
            out["controls"] = [c.to_json() for c in self.controls]
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclasses.dataclass(frozen=True)
class MmluBlock:
    """MMLU retention: the items, the baseline's accuracy, and each vector's entry ("isv:<axis>", "sve", ...)."""

    n: int
    baseline: Metric
    steered: dict[str, MmluEntry]

    @classmethod
    def from_json(cls, x: Any, where: str) -> MmluBlock:
        return cls(
            _get(x, "n", where, _int),
            _get(x, "baseline", where, metric),
            _get(x, "steered", where, lambda v, w: _each(v, w, MmluEntry.from_json)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "baseline": _metric_json(self.baseline),
            "steered": {k: e.to_json() for k, e in self.steered.items()},
        }


@dataclasses.dataclass(frozen=True)
class EnsembleResults:
    """`lens_steer.methods.ensemble.evaluate_ensembles`' output: coefficients chosen on validation and every test-split
    result."""

    config: dict[str, Any]
    axes: list[str]
    coefficients: dict[str, float]
    sweeps: dict[str, Any]
    in_distribution: dict[str, BbqBlock]
    ood: dict[str, BbqBlock | Skipped]
    mmlu: MmluBlock | None
    isvs: dict[str, Any]

    @classmethod
    def from_json(cls, x: Any, where: str = "ensemble") -> EnsembleResults:
        obj = _obj(x, where)
        mm = obj.get("mmlu")
        return cls(
            _get(obj, "config", where, _dict),
            [_str(a, f"{where}.axes") for a in _get(obj, "axes", where, _list)],
            _get(obj, "coefficients", where, lambda v, w: _each(v, w, _num)),
            _get(obj, "sweeps", where, _dict),
            _get(obj, "in_distribution", where, lambda v, w: _each(v, w, BbqBlock.from_json)),
            _get(obj, "ood", where, lambda v, w: _each(v, w, _ood)),
            None if mm is None else MmluBlock.from_json(mm, f"{where}.mmlu"),
            _get(obj, "isvs", where, _dict),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "axes": self.axes,
            "coefficients": self.coefficients,
            "sweeps": self.sweeps,
            "in_distribution": {k: b.to_json() for k, b in self.in_distribution.items()},
            "ood": {k: b.to_json() for k, b in self.ood.items()},
            "mmlu": None if self.mmlu is None else self.mmlu.to_json(),
            "isvs": self.isvs,
        }

    @property
    def n_boot(self) -> int | None:
        """Bootstrap resamples behind the intervals (0: no intervals were computed)."""
        value = self.config.get("n_boot")
        return value if isinstance(value, int) else None
