"""The individually optimised steering vector (ISV) as a value: what a search writes and an ensemble reads, the
pair set it was extracted from, and how its coefficients are scaled."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import get_axis
from lens_steer.errors import LensSteerError, StudyError, VectorError
from lens_steer.extract.activations import DEFAULT_SCALE, pair_activations, vector_from_activations
from lens_steer.extract.pair_sources import PairSource, search_pairs
from lens_steer.extract.pairs import PairSet
from lens_steer.model.load import HookedModel
from lens_steer.specs import parse_layers
from lens_steer.steering.interventions import Intervention, load_intervention
from lens_steer.steering.vectors import SteeringVector, layer_summary, load_vector, norm_summary

VECTOR_SCALE = DEFAULT_SCALE  # "contrast": coefficient 1 = the mean positive-negative difference at the layer


@dataclasses.dataclass(frozen=True)
class Isv:
    """One axis's individually optimised steering vector: the vector (scaled to the mean contrast per layer, see
    VECTOR_SCALE), the coefficient the search chose and the file it is in; when it comes from a search just run
    (`lens_steer.methods.search.run.run_isv_search`), also the study, the best additive trial's params and value, the
    unsteered baseline on the validation items, the finished trial count, study.json's summary, and the intervention
    of any kind the search chose (`chosen`, with its params and value)."""

    axis: str
    vector: SteeringVector | None  # None: the search tried no additive intervention
    coeff: float
    path: Path | None = None
    study_name: str | None = None
    params: dict[str, Any] | None = None
    value: float | None = None
    baseline: dict[str, float] | None = None
    n_trials: int | None = None
    summary: dict[str, Any] | None = None
    chosen: Intervention | None = None  # the search's pick of any kind; None when doing nothing beat every trial
    chosen_params: dict[str, Any] | None = None
    chosen_value: float | None = None
    by_kind: dict[str, Intervention] = dataclasses.field(default_factory=dict)  # each kind's best trial

    def __repr__(self) -> str:
        vec = self.vector
        parts = [f"axis={self.axis!r}"]
        if vec is not None:
            parts += [
                f"coeff={self.coeff:+g}",
                f"layers={layer_summary(vec.layers)}",
                f"norms={norm_summary(vec.norms())}",
                f"method={vec.metadata.method!r}",
                f"scale={vec.scale!r}",
            ]
        params = self.params or (dict(vec.metadata.provenance.get("params") or {}) if vec is not None else {})
        if self.chosen is not None:
            parts.append(f"chosen={self.chosen.kind}")
        if "corpus" in params:
            parts.append(f"pairs={params['corpus']!r} x {params.get('num_sents')}")
        if self.value is not None:
            parts.append(f"value={self.value:.4g}")
        if self.n_trials is not None:
            parts.append(f"trials={self.n_trials}")
        if self.path is not None:
            path = str(self.path)
            parts.append(f"path={path if len(path) <= 60 else '...' + path[-57:]!r}")
        return f"Isv({', '.join(parts)})"


def load_isvs(paths: Sequence[str | Path], model: HookedModel | None = None) -> list[Isv]:
    """ISVs from files or run folders (holding isv.safetensors); all must come from one model and hook,
    one per axis."""
    if not paths:
        raise StudyError("no ISV given; pass run folders or isv.safetensors files")
    out: list[Isv] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "isv.safetensors"
        vec = load_vector(path, model)
        prov = vec.metadata.provenance
        if "axis" not in prov or "coeff" not in prov:
            raise VectorError(f"{path}: no axis/coeff in its provenance; it was not written by `lens-steer search`")
        chosen_path = path.parent / "intervention.safetensors"
        chosen = load_intervention(chosen_path, model) if chosen_path.is_file() else None
        params = dict(chosen.metadata.provenance.get("params", {})) if chosen is not None else None
        out.append(
            Isv(get_axis(str(prov["axis"])).name, vec, float(prov["coeff"]), path, chosen=chosen, chosen_params=params)
        )
    first = out[0]
    for isv in out[1:]:
        a, b = first.vector.metadata, isv.vector.metadata
        if (a.model_name, a.d_model, a.hook) != (b.model_name, b.d_model, b.hook):
            raise VectorError(
                f"ISV {isv.path} is for model {b.model_name!r} ({b.hook}) but {first.path} is for {a.model_name!r} "
                f"({a.hook}); ensemble ISVs from one model"
            )
    seen: dict[str, Path | None] = {}
    for isv in out:
        if isv.axis in seen:
            raise StudyError(f"two ISVs for axis {isv.axis}: {seen[isv.axis]} and {isv.path}; give one per axis")
        seen[isv.axis] = isv.path
    return out


def searched_bbq_source(isvs: Sequence[Isv]) -> str:
    """The BBQ source the ISV searches judged their trials on (each run folder's study.json), "official" when none
    says."""
    found = set()
    for isv in isvs:
        study = isv.path.parent / "study.json" if isv.path is not None else None
        try:
            config = json.loads(study.read_text(encoding="utf-8")).get("config") if study is not None else None
        except (OSError, ValueError, AttributeError):  # no or damaged study.json: that run says nothing
            continue
        if isinstance(config, dict):
            found.add(str(config.get("bbq_source", "official")))
    if len(found) > 1:
        raise StudyError(f"the ISV searches used different BBQ sources ({', '.join(sorted(found))}); pass --bbq-source")
    return found.pop() if found else "official"


def isv_pairs(vector: SteeringVector, tokenizer: Any, data_root: str | Path | None = None) -> PairSet:
    """The pair set an ISV file was extracted from (from its provenance params and pair source)."""
    prov = vector.metadata.provenance
    p = prov.get("params")
    if not isinstance(p, Mapping):
        raise LensSteerError("vector has no ISV params in its provenance; it was not written by `lens-steer search`")
    source = PairSource.from_json(prov["pair_source"]) if isinstance(prov.get("pair_source"), Mapping) else None
    return search_pairs(
        p["corpus"],
        int(p["num_sents"]),
        int(p["persona"]),
        int(p["template"]),
        tokenizer=tokenizer,
        source=source,
        data_root=data_root,
    )


def trial_params_vector(
    model: HookedModel,
    params: Mapping[str, Any],
    *,
    hook: str = "hook_resid_post",
    data_root: str | Path | None = None,
    source: PairSource | None = None,
) -> SteeringVector:
    """Rebuild a trial's vector from scratch (no cache): for checking ISV files."""
    layers = parse_layers(params["layers"])
    pairs = search_pairs(
        params["corpus"],
        int(params["num_sents"]),
        int(params["persona"]),
        int(params["template"]),
        tokenizer=model.tokenizer,
        source=source,
        data_root=data_root,
    )
    return vector_from_activations(
        pair_activations(model, pairs, layers, hook=hook), params["method"], layers, scale=VECTOR_SCALE
    )


__all__ = ["VECTOR_SCALE", "Isv", "isv_pairs", "load_isvs", "searched_bbq_source", "trial_params_vector"]
