"""What the ISV search may choose and how it judges a trial, as data: `SearchSpace` and `SearchConfig`, each with
a JSON round trip, so a study can be repeated exactly from its files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from lens_steer.errors import LensSteerError, StudyError
from lens_steer.extract.activations import AGGREGATORS
from lens_steer.extract.pair_sources import DEFAULT_CORPORA, SEARCH_CORPORA
from lens_steer.extract.pairs import PERSONA_PAIRS, SYSTEM_TEMPLATES
from lens_steer.forward.questions import DEFAULT_SCORING, PROMPT_FORMATS, SCORINGS
from lens_steer.methods.search.kinds import KINDS, layer_choices
from lens_steer.methods.search.kinds import suggest as suggest_kind
from lens_steer.specs import layer_label, parse_layers
from lens_steer.steering.vectors import HOOK_KINDS

OBJECTIVES: tuple[str, ...] = ("acc", "bias", "ambig_guarded", "pareto")
DEFAULT_KINDS: tuple[str, ...] = ("additive", "ablation", "ace", "leace", "gated", "optimized")
SEARCH_METHODS: tuple[str, ...] = ("pca_diff", "mean_diff")
PARAM_NAMES: tuple[str, ...] = ("kind", "corpus", "num_sents", "persona", "template", "layers", "method", "coeff")

Params = dict[str, Any]


def default_layer_candidates(n_layers: int) -> tuple[tuple[int, ...], ...]:
    """The reference band (the paper's 13 layers n-17..n-5, clipped) and single layers n//4..n-3 in ~10 steps."""
    band = tuple(range(max(0, n_layers - 17), max(1, n_layers - 4)))
    step = max(1, n_layers // 15)
    singles = [(i,) for i in range(n_layers // 4, max(n_layers // 4 + 1, n_layers - 2), step)]
    out = [band] + [s for s in singles if s != band]
    return tuple(dict.fromkeys(out))


def _grid(low: float, high: float, step: float) -> int:
    """Number of steps between low and high; raises unless (high - low) is a whole number of steps."""
    n = (high - low) / step
    if abs(n - round(n)) > 1e-6:
        raise ValueError
    return int(round(n))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What the ISV search may choose. `layers=None` means `default_layer_candidates(model depth)`.

    Ranges are (low, high, step), inclusive. Persona and template are indices into
    `PERSONA_PAIRS` / `SYSTEM_TEMPLATES`; each layer candidate is one layer or a band steered together.
    """

    corpora: tuple[str, ...] = DEFAULT_CORPORA
    num_sents: tuple[int, int, int] = (100, 500, 50)
    personas: tuple[int, ...] = tuple(range(len(PERSONA_PAIRS)))
    templates: tuple[int, ...] = tuple(range(len(SYSTEM_TEMPLATES)))
    coeff: tuple[float, float, float] = (-4.0, 4.0, 0.4)
    layers: tuple[tuple[int, ...], ...] | None = None
    methods: tuple[str, ...] = SEARCH_METHODS
    kinds: tuple[str, ...] = DEFAULT_KINDS
    n_layers: int | None = None  # the model's depth, set by `resolve` (not part of the JSON)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name, valid in (("corpora", SEARCH_CORPORA), ("methods", tuple(AGGREGATORS)), ("kinds", KINDS)):
            values = tuple(getattr(self, name))
            if not values:
                raise StudyError(f"search space: {name} is empty; choose at least one of {', '.join(valid)}")
            bad = [v for v in values if v not in valid]
            if bad:
                raise StudyError(
                    f"search space: unknown {name[:-1] if name != 'corpora' else 'corpus'} {bad[0]!r}; valid: "
                    f"{', '.join(valid)}"
                )
            set_(name, tuple(dict.fromkeys(values)))
        for name, size in (("personas", len(PERSONA_PAIRS)), ("templates", len(SYSTEM_TEMPLATES))):
            values = tuple(getattr(self, name))
            if not values:
                raise StudyError(f"search space: {name} is empty; choose indices in 0..{size - 1}")
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < size]
            if bad:
                raise StudyError(
                    f"search space: {name[:-1]} index {bad[0]!r} out of range; valid indices 0..{size - 1}"
                )
            set_(name, tuple(dict.fromkeys(values)))
        lo, hi, st = self._range("num_sents", self.num_sents, integer=True)
        if lo < 2:
            raise StudyError(f"search space: num_sents low {lo} is below 2; PCA needs at least two pairs")
        set_("num_sents", (int(lo), int(hi), int(st)))
        set_("coeff", tuple(float(x) for x in self._range("coeff", self.coeff, integer=False)))
        if self.layers is not None:
            if not self.layers:
                raise StudyError(
                    "search space: layers is empty; give at least one layer or band, or null for the default"
                )
            try:
                cands = tuple(parse_layers(c, "layer candidate") for c in self.layers)
            except LensSteerError as e:
                raise StudyError(f"search space: {e}") from None
            set_("layers", tuple(dict.fromkeys(cands)))

    @staticmethod
    def _range(name: str, value: Sequence[Any], *, integer: bool) -> tuple[float, float, float]:
        try:
            lo, hi, st = (float(x) for x in value)
        except (TypeError, ValueError):
            raise StudyError(f"search space: {name} must be [low, high, step], got {value!r}") from None
        if integer and not all(float(x).is_integer() for x in (lo, hi, st)):
            raise StudyError(f"search space: {name} must be integers [low, high, step], got {list(value)}")
        if not all(math.isfinite(x) for x in (lo, hi, st)) or st <= 0:
            raise StudyError(f"search space: {name} step must be a positive number, got {list(value)}")
        if hi < lo:
            raise StudyError(f"search space: {name} range is empty (low {lo:g} > high {hi:g}); use low <= high")
        try:
            _grid(lo, hi, st)
        except ValueError:
            raise StudyError(
                f"search space: {name} range {lo:g}..{hi:g} is not a whole number of steps of {st:g}; adjust high"
            ) from None
        return lo, hi, st

    # ---- derived views -------------------------------------------------------------------------
    def resolve(self, n_layers: int) -> SearchSpace:
        """The space with default layers filled in for a model of `n_layers`, every layer checked."""
        layers = self.layers if self.layers is not None else default_layer_candidates(n_layers)
        space = dataclasses.replace(self, layers=layers, n_layers=n_layers)
        bad = [x for c in layers for x in c if x >= n_layers]
        if bad:
            raise StudyError(f"search space: layer {bad[0]} is outside the model's layers 0..{n_layers - 1}")
        return space

    @property
    def layer_choices(self) -> dict[str, tuple[int, ...]]:
        """`{label: layers}` of the layer candidates (needs resolved layers)."""
        if self.layers is None:
            raise StudyError("search space layers are not resolved; call resolve(n_layers) first")
        return {layer_label(c): c for c in self.layers}

    @property
    def all_layers(self) -> tuple[int, ...]:
        """Every layer any kind's candidate edits (read in one pass)."""
        if self.n_layers is None:
            raise StudyError("search space layers are not resolved; call resolve(n_layers) first")
        return tuple(
            sorted(
                {x for k in self.kinds for c in layer_choices(k, self.layer_choices, self.n_layers).values() for x in c}
            )
        )

    def suggest(self, trial: optuna.Trial) -> Params:
        """Draw one point of the space through `trial`: the kind, then its parameters (`kinds.suggest`); "all layers"
        is a choice once the space is resolved for a model."""
        return suggest_kind(trial, self, self.n_layers)

    # ---- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; layers as labels ('15', '13-25') or null."""
        return {
            "corpora": list(self.corpora),
            "num_sents": list(self.num_sents),
            "personas": list(self.personas),
            "templates": list(self.templates),
            "coeff": list(self.coeff),
            "layers": None if self.layers is None else [layer_label(c) for c in self.layers],
            "methods": list(self.methods),
            "kinds": list(self.kinds),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str = "search space") -> SearchSpace:
        """Parse `to_json` output; missing keys keep their defaults, unknown keys are refused."""
        _check_keys(cls, obj, source, exclude=("n_layers",))
        kwargs: dict[str, Any] = {}
        for key, value in obj.items():
            if key == "layers":
                kwargs[key] = None if value is None else tuple(value) if isinstance(value, list) else value
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                raise StudyError(f"{source}: {key} must be a JSON list, got {value!r}")
        try:
            return cls(**kwargs)
        except StudyError as e:
            raise StudyError(f"{source}: {str(e).removeprefix('search space: ')}") from None

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read a search space JSON file."""
        return cls.from_json(read_json(path), source=str(path))


def _check_keys(cls: type, obj: Any, source: str, exclude: Sequence[str] = ()) -> None:
    """Refuse (one line, naming `source`) anything but a JSON object whose keys are fields of the dataclass `cls`."""
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    if not isinstance(obj, Mapping):
        raise StudyError(f"{source}: expected a JSON object with keys {', '.join(sorted(known))}")
    unknown = sorted(set(obj) - known)
    if unknown:
        raise StudyError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")


def read_json(path: str | Path) -> Any:
    """A JSON configuration file (search space or config), or a one-line StudyError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path} does not exist; write a JSON file (see docs/search.md)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StudyError(
            f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file (docs/search.md shows the format)"
        ) from None


# ============================================================================ the search config
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How one ISV study judges a trial. Everything that changes the objective's values is here.

    objective: "acc" (BBQ accuracy, ambiguous and disambiguated pooled, the paper), "bias" (minus the
    mean absolute bias score of both context conditions), "ambig_guarded" (ambiguous accuracy minus
    `guard_penalty` times the shortfall of disambiguated accuracy below baseline - `ambig_tolerance`), "pareto"
    (three objectives: ambiguous accuracy, disambiguated accuracy and minus the drift on `drift_texts` neutral
    texts; the Pareto front is reported and the point chosen from it is the best by "ambig_guarded").
    `mmlu_weight` > 0 subtracts that weight times the MMLU accuracy lost against baseline on
    `mmlu_items` MMLU dev items. `limit` caps validation items per trial (whole variant groups);
    `chunk_size` items are scored between pruning checks. All values are maximised.

    Seeds: `seed` drives only the TPE sampler; `data_seed` chooses which validation and MMLU items the study is
    judged on (and their order), so another sampler seed searches again on the same data; `split_seed` cuts the
    train/validation/test split.
    """

    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    objective: str = "acc"
    n_trials: int = 50
    limit: int | None = 200
    seed: int = 0
    data_seed: int = 0
    split_seed: int = 0
    scoring: str = DEFAULT_SCORING
    prompt_format: str = "reference"
    chunk_size: int = 50
    ambig_tolerance: float = 0.02
    guard_penalty: float = 10.0
    mmlu_weight: float = 0.0
    mmlu_items: int = 50
    drift_texts: int = 16
    hook: str = "hook_resid_post"
    bbq_source: str = "official"
    generated_dir: str | None = None
    tpe_startup_trials: int = 10
    pruner_startup_trials: int = 5
    max_batch: int = 16

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise StudyError(f"search config: {msg}")

        if isinstance(self.space, Mapping):
            object.__setattr__(self, "space", SearchSpace.from_json(self.space))
        need(self.objective in OBJECTIVES, f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}")
        need(self.scoring in SCORINGS, f"unknown scoring {self.scoring!r}; use one of {', '.join(SCORINGS)}")
        need(
            self.prompt_format in PROMPT_FORMATS,
            f"unknown prompt_format {self.prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}",
        )
        need(self.hook in HOOK_KINDS, f"unknown hook {self.hook!r}; use one of {', '.join(HOOK_KINDS)}")
        for name in ("n_trials", "chunk_size", "mmlu_items", "max_batch", "tpe_startup_trials", "drift_texts"):
            v = getattr(self, name)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"{name} must be a positive integer, got {v!r}",
            )
        for name in ("seed", "data_seed", "split_seed"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
        need(
            isinstance(self.pruner_startup_trials, int) and self.pruner_startup_trials >= 0,
            f"pruner_startup_trials must be >= 0, got {self.pruner_startup_trials!r}",
        )
        need(
            self.limit is None or (isinstance(self.limit, int) and self.limit >= 1),
            f"limit must be a positive integer or null, got {self.limit!r}",
        )
        for name in ("ambig_tolerance", "guard_penalty", "mmlu_weight"):
            v = getattr(self, name)
            need(
                isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                f"{name} must be a non-negative number, got {v!r}",
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the space nested)."""
        out = dataclasses.asdict(self)
        out["space"] = self.space.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str = "search config") -> SearchConfig:
        """Parse `to_json` output; missing keys keep their defaults, unknown keys are refused."""
        _check_keys(cls, obj, source)
        kwargs = dict(obj)
        if "space" in kwargs:
            kwargs["space"] = SearchSpace.from_json(kwargs["space"], source=f"{source} space")
        try:
            return cls(**kwargs)
        except StudyError as e:
            raise StudyError(f"{source}: {str(e).removeprefix('search config: ')}") from None

    def judged_json(self) -> dict[str, Any]:
        """The fields that decide a trial's value (everything but the budget): two workers must agree on them."""
        out = self.to_json()
        out.pop("n_trials")
        return out

    def fingerprint(self) -> str:
        """A short hash of `judged_json`."""
        return hashlib.sha256(json.dumps(self.judged_json(), sort_keys=True).encode()).hexdigest()[:16]


__all__ = [
    "OBJECTIVES",
    "PARAM_NAMES",
    "SEARCH_METHODS",
    "Params",
    "SearchConfig",
    "SearchSpace",
    "default_layer_candidates",
    "layer_label",
    "read_json",
]
