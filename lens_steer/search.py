"""Optuna search for individually optimised steering vectors (ISV): space and config as data, cached
activations, resumable multi-worker studies, and the ISV's output files.

Layers of the module, each usable on its own:
- `SearchSpace` / `SearchConfig`: what is searched and how it is judged (JSON round-trip).
- `open_storage` / `open_study` / `run_trials`: any Optuna storage, resume, workers, retries of killed
  trials, and a total trial count shared by every worker. `run_trials` takes any objective
  `(params, trial) -> float`, so the machinery is testable without a model.
- `ActivationCache` / `IsvObjective`: the BBQ-validation objective with contrastive activations read
  once per (corpus, persona, template) and reused for every trial that differs only in prompt count,
  layer, method or coefficient.
- `run_isv_search`: the whole per-axis search; `write_isv_outputs`: vector, study.json, figures.

Prefix reuse (`start_at_layer`) is deliberately absent: TransformerLens' `TransformerBridge` still runs
blocks 0..k-1 when `start_at_layer=k` (it feeds the cached residual as `inputs_embeds`, lets the early
blocks run, and swaps the residual back in at block k), so it saves no compute; see docs/search.md.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from lens_steer.axes import Axis, get_axis
from lens_steer.consistency import activation_consistency, trials_consistency_correlation
from lens_steer.benches import bbq_predictions
from lens_steer.data.bbq import BbqItem, load_bbq
from lens_steer.data.splits import select_split
from lens_steer.errors import LensSteerError, StudyError
from lens_steer.evaluate import DEFAULT_SCORING, PROMPT_FORMATS, SCORINGS, score_steered
from lens_steer.extract import AGGREGATORS, PairActivations, pair_activations, vector_from_activations
from lens_steer.io import atomic_write_bytes, atomic_write_text, write_json
from lens_steer.metrics import BbqPrediction, bbq_metrics
from lens_steer.models import HookedModel, model_identity
from lens_steer.pairs import CORPORA, PERSONA_PAIRS, SYSTEM_TEMPLATES, PairSet, load_corpus, persona_pairs, system_prompt_mode
from lens_steer.prefix import PrefixCache, start_block
from lens_steer.vectors import HOOK_KINDS, SteeringVector, hook_name

OBJECTIVES: tuple[str, ...] = ("acc", "bias", "ambig_guarded")
SEARCH_METHODS: tuple[str, ...] = ("pca_diff", "mean_diff")
PARAM_NAMES: tuple[str, ...] = ("corpus", "num_sents", "persona", "template", "layers", "method", "coeff")
FINISHED: tuple[TrialState, ...] = (TrialState.COMPLETE, TrialState.PRUNED)
JOURNAL_PREFIX = "journal:"
VECTOR_SCALE = "contrast"  # coefficient 1 = the mean positive-negative difference at the layer (see extract.vector_from_activations)
_HEARTBEAT_ATTR = "lens_steer_heartbeat"
_CONFIG_ATTR = "lens_steer_config"

Params = dict[str, Any]
Objective = Callable[[Params, optuna.Trial], float]
TrialProgress = Callable[["TrialReport"], None]


# ============================================================================ the search space
def layer_label(layers: Sequence[int]) -> str:
    """'15' for one layer, '13-25' for a contiguous band, else '3,5,7' (Optuna categorical values)."""
    ls = sorted(set(int(x) for x in layers))
    if len(ls) == 1:
        return str(ls[0])
    if ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}-{ls[-1]}"
    return ",".join(str(x) for x in ls)


def parse_layer_spec(spec: Any, where: str = "layers") -> tuple[int, ...]:
    """One layer candidate from JSON: an int, a list of ints, or a string '15', '10-14', '3,5,7'."""
    try:
        if isinstance(spec, bool):
            raise ValueError
        if isinstance(spec, int):
            out = [spec]
        elif isinstance(spec, (list, tuple)):
            out = [int(x) for x in spec if not isinstance(x, bool)]
            if len(out) != len(spec):
                raise ValueError
        elif isinstance(spec, str):
            out = []
            for part in spec.split(","):
                part = part.strip()
                if "-" in part[1:]:
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
        else:
            raise ValueError
    except ValueError:
        raise StudyError(f"{where}: cannot read layer candidate {spec!r}; write 15, [13, 14], '10-14' or '3,5,7'") from None
    if not out or any(x < 0 for x in out):
        raise StudyError(f"{where}: layer candidate {spec!r} is empty or negative; layers are 0-based block indices")
    return tuple(sorted(set(out)))


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

    corpora: tuple[str, ...] = CORPORA
    num_sents: tuple[int, int, int] = (100, 500, 50)
    personas: tuple[int, ...] = tuple(range(len(PERSONA_PAIRS)))
    templates: tuple[int, ...] = tuple(range(len(SYSTEM_TEMPLATES)))
    coeff: tuple[float, float, float] = (-4.0, 4.0, 0.4)
    layers: tuple[tuple[int, ...], ...] | None = None
    methods: tuple[str, ...] = SEARCH_METHODS

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name, valid in (("corpora", CORPORA), ("methods", tuple(AGGREGATORS))):
            values = tuple(getattr(self, name))
            if not values:
                raise StudyError(f"search space: {name} is empty; choose at least one of {', '.join(valid)}")
            bad = [v for v in values if v not in valid]
            if bad:
                raise StudyError(f"search space: unknown {name[:-1] if name != 'corpora' else 'corpus'} {bad[0]!r}; valid: {', '.join(valid)}")
            set_(name, tuple(dict.fromkeys(values)))
        for name, size in (("personas", len(PERSONA_PAIRS)), ("templates", len(SYSTEM_TEMPLATES))):
            values = tuple(getattr(self, name))
            if not values:
                raise StudyError(f"search space: {name} is empty; choose indices in 0..{size - 1}")
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < size]
            if bad:
                raise StudyError(f"search space: {name[:-1]} index {bad[0]!r} out of range; valid indices 0..{size - 1}")
            set_(name, tuple(dict.fromkeys(values)))
        lo, hi, st = self._range("num_sents", self.num_sents, integer=True)
        if lo < 2:
            raise StudyError(f"search space: num_sents low {lo} is below 2; PCA needs at least two pairs")
        set_("num_sents", (int(lo), int(hi), int(st)))
        set_("coeff", tuple(float(x) for x in self._range("coeff", self.coeff, integer=False)))
        if self.layers is not None:
            if not self.layers:
                raise StudyError("search space: layers is empty; give at least one layer or band, or null for the default")
            cands = tuple(parse_layer_spec(c, "search space layers") for c in self.layers)
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
            raise StudyError(f"search space: {name} range {lo:g}..{hi:g} is not a whole number of steps of {st:g}; adjust high") from None
        return lo, hi, st

    # ---- derived views -------------------------------------------------------------------------
    def resolve(self, n_layers: int) -> SearchSpace:
        """The space with default layers filled in for a model of `n_layers`, every layer checked."""
        space = self if self.layers is not None else dataclasses.replace(self, layers=default_layer_candidates(n_layers))
        assert space.layers is not None
        bad = [x for c in space.layers for x in c if x >= n_layers]
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
        """Every layer any candidate steers (read in one pass)."""
        return tuple(sorted({x for c in self.layer_choices.values() for x in c}))

    def suggest(self, trial: optuna.Trial) -> Params:
        """Draw one point of the space through `trial` (names in PARAM_NAMES)."""
        n_lo, n_hi, n_st = self.num_sents
        c_lo, c_hi, c_st = self.coeff
        return {
            "corpus": trial.suggest_categorical("corpus", list(self.corpora)),
            "num_sents": trial.suggest_int("num_sents", n_lo, n_hi, step=n_st),
            "persona": trial.suggest_categorical("persona", list(self.personas)),
            "template": trial.suggest_categorical("template", list(self.templates)),
            "layers": trial.suggest_categorical("layers", list(self.layer_choices)),
            "method": trial.suggest_categorical("method", list(self.methods)),
            "coeff": round(trial.suggest_float("coeff", c_lo, c_hi, step=c_st), 10),
        }

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
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str = "search space") -> SearchSpace:
        """Parse `to_json` output; missing keys keep their defaults, unknown keys are refused."""
        if not isinstance(obj, Mapping):
            raise StudyError(f"{source}: expected a JSON object with keys {', '.join(f.name for f in dataclasses.fields(cls))}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise StudyError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
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
        return cls.from_json(_read_json(path), source=str(path))


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path} does not exist; write a JSON file (see docs/search.md)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StudyError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file (docs/search.md shows the format)") from None


# ============================================================================ the search config
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How one ISV study judges a trial. Everything that changes the objective's values is here.

    objective: "acc" (BBQ accuracy, ambiguous and disambiguated pooled, the paper), "bias" (minus the
    mean absolute bias score of both context conditions), "ambig_guarded" (ambiguous accuracy minus
    `guard_penalty` times the shortfall of disambiguated accuracy below baseline - `ambig_tolerance`).
    `mmlu_weight` > 0 subtracts that weight times the MMLU accuracy lost against baseline on
    `mmlu_items` MMLU dev items. `limit` caps validation items per trial (whole variant groups);
    `chunk_size` items are scored between pruning checks. All values are maximised.
    """

    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    objective: str = "acc"
    n_trials: int = 50
    limit: int | None = 200
    seed: int = 0
    split_seed: int = 0
    scoring: str = DEFAULT_SCORING
    prompt_format: str = "reference"
    chunk_size: int = 50
    ambig_tolerance: float = 0.02
    guard_penalty: float = 10.0
    mmlu_weight: float = 0.0
    mmlu_items: int = 50
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
        need(self.prompt_format in PROMPT_FORMATS, f"unknown prompt_format {self.prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}")
        need(self.hook in HOOK_KINDS, f"unknown hook {self.hook!r}; use one of {', '.join(HOOK_KINDS)}")
        for name in ("n_trials", "chunk_size", "mmlu_items", "max_batch", "tpe_startup_trials"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{name} must be a positive integer, got {v!r}")
        need(isinstance(self.pruner_startup_trials, int) and self.pruner_startup_trials >= 0, f"pruner_startup_trials must be >= 0, got {self.pruner_startup_trials!r}")
        need(self.limit is None or (isinstance(self.limit, int) and self.limit >= 1), f"limit must be a positive integer or null, got {self.limit!r}")
        for name in ("ambig_tolerance", "guard_penalty", "mmlu_weight"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{name} must be a non-negative number, got {v!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the space nested)."""
        out = dataclasses.asdict(self)
        out["space"] = self.space.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str = "search config") -> SearchConfig:
        """Parse `to_json` output; missing keys keep their defaults, unknown keys are refused."""
        if not isinstance(obj, Mapping):
            raise StudyError(f"{source}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise StudyError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
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


# ============================================================================ storage and studies
def redact_url(url: str) -> str:
    """`url` with any password replaced by '***' (safe to print and to store)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


def default_storage(out_dir: str | Path) -> str:
    """`sqlite:///<out_dir>/optuna.db` (absolute)."""
    return f"sqlite:///{Path(out_dir).resolve() / 'optuna.db'}"


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def storage_exists(url: str | None) -> bool:
    """False where the storage is a file (SQLite, journal) that does not exist yet; True otherwise."""
    if url is None:
        return True
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :]).is_file()
    f = _sqlite_file(url)
    return f is None or f.is_file()


def open_storage(
    url: str | None, *, heartbeat_interval: int = 10, grace_period: int | None = None, max_retry: int | None = 3
) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: None (in memory), "journal:<file>" (several processes on one
    machine) or any SQLAlchemy URL (sqlite:///..., postgresql://..., mysql://...).

    RDB storages get Optuna's heartbeat, so a trial whose worker died is failed after `grace_period`
    seconds (default 2 x interval) and re-queued by `RetryFailedTrialCallback` (at most `max_retry`
    times); journal storages get the same behaviour from `run_trials`' own heartbeat.
    """
    if heartbeat_interval < 1:
        raise StudyError(f"heartbeat interval must be at least 1 second, got {heartbeat_interval}")
    grace = grace_period if grace_period is not None else 2 * heartbeat_interval
    if grace <= heartbeat_interval:
        raise StudyError(f"grace period {grace}s must exceed the heartbeat interval {heartbeat_interval}s")
    if url is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(url, str) or not url.strip():
        raise StudyError(f"storage URL {url!r} is empty; give e.g. sqlite:///run/optuna.db or journal:run/journal.log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if url.startswith(JOURNAL_PREFIX):
            path = Path(url[len(JOURNAL_PREFIX) :])
            if not path.parent.is_dir():
                raise StudyError(f"cannot open journal storage {url}: folder {path.parent} does not exist; create it first")
            try:
                from optuna.storages.journal import JournalFileBackend, JournalStorage

                storage = JournalStorage(JournalFileBackend(str(path)))
            except (OSError, ValueError) as e:
                raise StudyError(f"cannot open journal storage {url}: {_first_line(e)}") from None
            storage._lens_steer_heartbeat = (heartbeat_interval, grace, max_retry)  # type: ignore[attr-defined]
            return storage
        f = _sqlite_file(url)
        if f is not None and not f.parent.is_dir():
            raise StudyError(f"cannot open storage {url}: folder {f.parent} does not exist; create it first")
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace, **_retry_kwargs(max_retry))
            except ImportError as e:  # Optuna re-raises a missing driver as a bare ImportError
                name = getattr(e.__cause__, "name", None) or getattr(e, "name", None) or "its database driver"
                raise StudyError(f"cannot open storage {redact_url(url)}: Python module {name!r} is missing; install the driver (for PostgreSQL: pip install 'psycopg[binary]')") from None
            except Exception as e:  # SQLAlchemy raises many types (ArgumentError, OperationalError, ...)
                if attempt < 4 and _schema_race(e):  # workers starting together both create the tables: the later one retries
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise StudyError(f"cannot open storage {redact_url(url)}: {type(e).__name__}: {_first_line(e)}; check the URL, server and credentials") from None
        raise AssertionError("unreachable")


def _schema_race(e: BaseException) -> bool:
    """Whether opening a storage failed because another process was creating the same tables just then."""
    text = str(e).lower()
    return type(e).__name__ == "IntegrityError" or "already exists" in text or "database is locked" in text or "unique constraint" in text


def _retry_callback(max_retry: int | None) -> Any:
    """Optuna's callback that re-queues a trial whose worker stopped beating (renamed in Optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def _retry_kwargs(max_retry: int | None) -> dict[str, Any]:
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    return {key: _retry_callback(max_retry)}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies a storage holds."""
    return [s.study_name for s in storage.get_all_studies()]


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    config: SearchConfig | None = None,
    resume: bool = False,
    storage_label: str = "storage",
) -> tuple[optuna.Study, SearchConfig | None]:
    """Create, join or resume a study; returns it and the configuration to run it with.

    - new name, not `resume`: create it and store `config` in it.
    - existing name, not `resume`: join it (another worker, or a re-run of the same command) if its
      stored configuration judges trials the same way; else a StudyError (study untouched).
    - `resume`: the study must exist (else StudyError, storage untouched); its stored configuration is
      used, with `config.n_trials` if `config` is given.
    """
    names = study_names(storage)
    exists = study_name in names
    if resume and not exists:
        have = f"it holds {', '.join(names)}" if names else "it holds no study"
        raise StudyError(f"cannot resume study {study_name!r}: not found in {storage_label} ({have}); run without --resume to start it")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=(config.pruner_startup_trials if config else 5), n_warmup_steps=0)
    if exists:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        stored_obj = study.user_attrs.get(_CONFIG_ATTR)
        stored = SearchConfig.from_json(stored_obj, source=f"study {study_name!r} stored config") if stored_obj else None
        if resume:
            use = stored if stored is not None else config
            if use is not None and config is not None:
                use = dataclasses.replace(use, n_trials=config.n_trials)
        else:
            if stored is not None and config is not None and stored.fingerprint() != config.fingerprint():
                field = _first_difference(stored.judged_json(), config.judged_json())
                raise StudyError(
                    f"study {study_name!r} already exists in {storage_label} with a different configuration ({field}); "
                    "add --resume to continue it with its stored configuration, or choose another --study name"
                )
            use = config if config is not None else stored
        if use is not None:
            study.pruner = optuna.pruners.MedianPruner(n_startup_trials=use.pruner_startup_trials, n_warmup_steps=0)
        return study, use
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", pruner=pruner)
    if config is not None:
        study.set_user_attr(_CONFIG_ATTR, config.to_json())
    study.set_user_attr("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return study, config


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            found = _first_difference(x, y, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{key}: stored {x!r}, given {y!r}"
    return ""


# ============================================================================ running trials
@dataclasses.dataclass(frozen=True)
class TrialReport:
    """What a worker tells its progress callback after each of its trials."""

    finished: int
    n_trials: int
    trial_number: int
    state: str
    value: float | None
    best_value: float | None
    best_params: Params | None
    seconds: float


class _Surplus(Exception):
    """Raised inside a trial that another worker's earlier trial made unnecessary."""


def _uses_own_heartbeat(storage: Any) -> tuple[int, int, int | None] | None:
    return getattr(storage, "_lens_steer_heartbeat", None)


class _Heartbeat:
    """Writes the time into a running trial's system attributes every `interval` s (journal storages)."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        try:
            self.storage.set_trial_system_attr(self.trial_id, _HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            self.stop.set()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> _Heartbeat:
        self._beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail running trials whose worker stopped beating and queue a retry of each; returns their numbers.

    RDB storages: Optuna's own heartbeat check. Journal storages: the heartbeat `run_trials` writes.
    """
    own = _uses_own_heartbeat(study._storage)
    if own is None:
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before)
    _, grace, max_retry = own
    now = time.time()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(_HEARTBEAT_ATTR)
        last = float(beat) if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - last > grace and _fail_and_retry(study, t, max_retry):
            failed.append(t.number)
    return failed


def fail_orphaned_trials(study: optuna.Study, max_retry: int | None = 3) -> list[int]:
    """Fail every running trial at once and queue a retry of each; returns their numbers.

    Only for a storage no other process can be using (a locked run folder's own database): its running
    trials belong to a worker that was killed, so there is no heartbeat grace period to wait out."""
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if _fail_and_retry(study, t, max_retry)]


def _fail_and_retry(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> bool:
    """Mark a running trial FAIL and enqueue its retry (same params); False if it finished meanwhile."""
    try:
        if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _retry_callback(max_retry)(study, study._storage.get_trial(trial._trial_id))
    return True


def _sampler(seed: int, n_before: int, startup: int) -> optuna.samplers.TPESampler:
    """A TPE sampler seeded from the study seed and `n_before`, the trials finished or running ahead of
    this one: a single worker draws the same points in every run (a killed trial's retry included), and
    workers running side by side draw different ones. `constant_liar` makes TPE count the other workers'
    running trials, so parallel workers do not propose the same point."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}:{n_before}".encode()).digest()[:4], "big")
    return optuna.samplers.TPESampler(seed=derived, n_startup_trials=startup, constant_liar=True)


def run_trials(
    study: optuna.Study,
    objective: Objective,
    space: SearchSpace,
    n_trials: int,
    *,
    seed: int = 0,
    tpe_startup_trials: int = 10,
    poll_seconds: float = 1.0,
    progress: TrialProgress | None = None,
) -> int:
    """Run trials until the study holds `n_trials` finished (complete or pruned) trials, counting every
    worker's. Returns how many trials this worker finished.

    A trial started while others already fill the budget ends as FAIL with user attr "surplus" (the
    earlier-numbered trial wins), so workers never overshoot. While the remaining budget is held by
    other workers' running trials this worker waits, failing stale ones so that a killed worker's
    trial is retried here.
    """
    if n_trials < 1:
        raise StudyError(f"n_trials must be at least 1, got {n_trials}")
    own_hb = _uses_own_heartbeat(study._storage)
    done_here = 0

    def wrapped(trial: optuna.Trial) -> float:
        earlier = [
            t
            for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            if t.state in FINISHED or (t.number < trial.number)
        ]
        if len(earlier) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus
        study.sampler = _sampler(seed, len(earlier), tpe_startup_trials)  # draws nothing before the first suggest
        params = space.suggest(trial)
        if own_hb is None:
            return float(objective(params, trial))
        with _Heartbeat(study._storage, trial._trial_id, own_hb[0]):
            return float(objective(params, trial))

    while True:
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        if finished >= n_trials:
            return done_here
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if finished + running >= n_trials and waiting == 0:
            time.sleep(poll_seconds)
            continue
        start = time.perf_counter()
        last: list[FrozenTrial] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(wrapped, n_trials=1, catch=(_Surplus,), callbacks=[lambda s, t: last.append(t)])
        if not last or last[0].user_attrs.get("surplus"):
            continue
        t = last[0]
        done_here += t.state in FINISHED
        if progress is not None:
            finished = len(study.get_trials(deepcopy=False, states=FINISHED))
            best = _best_trial(study)
            progress(
                TrialReport(
                    finished=finished,
                    n_trials=n_trials,
                    trial_number=t.number,
                    state=t.state.name,
                    value=t.value if t.value is not None else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
                    best_value=best.value if best else None,
                    best_params=dict(best.params) if best else None,
                    seconds=time.perf_counter() - start,
                )
            )


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


# ============================================================================ activation cache
def _tokenizer_label(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


class ActivationCache:
    """Last-token activations of persona pair sets at fixed layers, keyed by (corpus, persona, template).

    `num_sents` selects the first prompts of a corpus, so a set of n pairs is the first n rows of any
    larger one: a request is served by slicing, or by reading only the missing pairs and appending.
    In-process LRU of `max_entries` datasets; with `disk_dir`, entries also persist in files keyed
    by everything that determines their content (model identity, hook, layers, corpus hash, persona,
    template, tokenizer). `hits`, `misses` and `pairs_read` count the work done.
    """

    def __init__(
        self,
        model: HookedModel,
        layers: Sequence[int],
        *,
        hook: str = "hook_resid_post",
        max_entries: int = 16,
        disk_dir: str | Path | None = None,
        data_root: str | Path | None = None,
        max_batch: int = 16,
    ) -> None:
        if max_entries < 1:
            raise StudyError(f"activation cache needs max_entries >= 1, got {max_entries}")
        self.model, self.layers, self.hook = model, tuple(sorted(set(layers))), hook
        self.max_entries, self.data_root, self.max_batch = max_entries, data_root, max_batch
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._mem: collections.OrderedDict[tuple[str, int, int], PairActivations] = collections.OrderedDict()
        self.hits = self.misses = self.pairs_read = 0

    def pairs(self, corpus: str, num_sents: int, persona: int, template: int) -> PairSet:
        """The persona pair set these activations come from."""
        return persona_pairs(corpus, num_sents, persona, template, tokenizer=self.model.tokenizer, data_root=self.data_root)

    def _disk_path(self, key: tuple[str, int, int], corpus_sha: str) -> Path | None:
        if self.disk_dir is None:
            return None
        ident = model_identity(self.model)
        blob = json.dumps(
            {
                "model": ident.name,
                "d_model": ident.d_model,
                "n_layers": ident.n_layers,
                "processing": dict(ident.processing),
                "hook": self.hook,
                "layers": list(self.layers),
                "corpus": key[0],
                "corpus_sha256": corpus_sha,
                "persona": key[1],
                "template": key[2],
                "tokenizer": _tokenizer_label(self.model.tokenizer),
            },
            sort_keys=True,
        )
        return self.disk_dir / f"acts-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.pt"

    def get(self, corpus: str, num_sents: int, persona: int, template: int) -> PairActivations:
        """Activations of `persona_pairs(corpus, num_sents, persona, template)` at the cache's layers."""
        pairs = self.pairs(corpus, num_sents, persona, template)
        key = (corpus, persona, template)
        have = self._mem.get(key)
        disk = self._disk_path(key, pairs.provenance["sha256"])
        if have is None and disk is not None and disk.is_file():
            have = self._load(disk, pairs)
        if have is not None and len(have) >= num_sents:
            self.hits += 1
        else:
            self.misses += 1
            start = 0 if have is None else len(have)
            extra = PairSet(pairs.pairs[start:], pairs.provenance)
            new = pair_activations(self.model, extra, self.layers, hook=self.hook, max_batch=self.max_batch)
            self.pairs_read += len(extra)
            have = new if have is None else _concat_acts(have, new)
            if disk is not None:
                self._save(disk, have)
        self._mem[key] = have
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)
        return _slice_acts(have, num_sents, {**pairs.provenance, "n_pairs": num_sents})

    def _save(self, path: Path, acts: PairActivations) -> None:
        buf = io.BytesIO()
        torch.save({"positive": dict(acts.positive), "negative": dict(acts.negative), "n": len(acts)}, buf)
        atomic_write_bytes(path, buf.getvalue())

    def _load(self, path: Path, pairs: PairSet) -> PairActivations | None:
        ident = model_identity(self.model)
        try:
            obj = torch.load(path, weights_only=True)
            sides = (obj["positive"], obj["negative"])
            n = int(obj["n"])
            whole = all(
                set(side) == set(self.layers) and all(v.shape == (n, ident.d_model) and bool(torch.isfinite(v).all()) for v in side.values())
                for side in sides
            )
        except Exception:  # a truncated or damaged cache file is re-read from the model, never trusted
            return None
        if not whole or n < 1:
            return None
        return PairActivations(obj["positive"], obj["negative"], self.hook, ident.name, ident.d_model, dict(ident.processing), pairs.provenance)


def _concat_acts(a: PairActivations, b: PairActivations) -> PairActivations:
    return dataclasses.replace(
        a,
        positive={k: torch.cat([a.positive[k], b.positive[k]]) for k in a.positive},
        negative={k: torch.cat([a.negative[k], b.negative[k]]) for k in a.negative},
    )


def _slice_acts(a: PairActivations, n: int, provenance: Mapping[str, Any]) -> PairActivations:
    return dataclasses.replace(
        a,
        positive={k: v[:n] for k, v in a.positive.items()},
        negative={k: v[:n] for k, v in a.negative.items()},
        provenance=dict(provenance),
    )


# ============================================================================ the BBQ objective
def validation_items(axis: Axis, config: SearchConfig, data_root: str | Path | None = None) -> list[BbqItem]:
    """The axis's BBQ validation split, capped at `config.limit` (whole variant groups), in a seeded
    shuffled order so that every chunk is a fair sample for pruning."""
    from lens_steer.benches import limit_bbq

    items = load_bbq([axis.bbq_category], data_root=data_root, source=config.bbq_source, generated_dir=config.generated_dir)
    val = limit_bbq(select_split(items, "validation", seed=config.split_seed), config.limit, seed=config.seed)
    if not val:
        raise StudyError(f"axis {axis.name}: the BBQ validation split is empty; check the data under bbq/")
    order = sorted(range(len(val)), key=lambda i: hashlib.sha256(f"{config.seed}:{val[i].example_id}:{i}".encode()).hexdigest())
    return [val[i] for i in order]


def objective_value(metrics: Mapping[str, Any], config: SearchConfig, baseline: Mapping[str, float] | None = None) -> float:
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
    block is kept (up to `prefix_bytes`; 0 turns this off) and reused by later trials.
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
        prefix_bytes: int = 2 << 30,
    ) -> None:
        self.model, self.axis, self.config, self.data_root = model, axis, config, data_root
        self.space = config.space.resolve(int(model.cfg.n_layers))
        self.items = list(items) if items is not None else validation_items(axis, config, data_root)
        self.cache = cache
        starts = {start_block(hook_name(x, config.hook) for x in layers) for layers in self.space.layer_choices.values()} - {None}
        self.prefix = PrefixCache(starts, max_bytes=prefix_bytes) if starts and prefix_bytes > 0 else None  # type: ignore[arg-type]
        self._baseline = dict(baseline) if baseline is not None else None
        self._mmlu: list[Any] | None = None

    # ---- pieces ----------------------------------------------------------------------------
    def vector(self, params: Mapping[str, Any]) -> SteeringVector:
        """The steering vector a trial's params describe, scaled so coefficient 1 is the mean contrast."""
        layers, acts = self.trial_activations(params)
        return vector_from_activations(acts, params["method"], layers, scale=VECTOR_SCALE)

    def trial_activations(self, params: Mapping[str, Any]) -> tuple[tuple[int, ...], PairActivations]:
        """The steered layers of a trial and its contrastive data's activations there (or at more layers)."""
        layers = self.space.layer_choices[params["layers"]] if params["layers"] in self.space.layer_choices else parse_layer_spec(params["layers"])
        args = (params["corpus"], int(params["num_sents"]), int(params["persona"]), int(params["template"]))
        if self.cache is not None:
            acts = self.cache.get(*args)
        else:
            pairs = persona_pairs(args[0], args[1], args[2], args[3], tokenizer=self.model.tokenizer, data_root=self.data_root)
            acts = pair_activations(self.model, pairs, layers, hook=self.config.hook, max_batch=self.config.max_batch)
        return tuple(layers), acts

    def predictions(self, items: Sequence[BbqItem], vector: SteeringVector | None = None, coeff: float = 0.0) -> list[BbqPrediction]:
        """BBQ predictions for `items`, steered by `coeff * vector` if given."""
        return bbq_predictions(
            self.model, items, vector=vector, coeff=coeff, scoring=self.config.scoring, prompt_format=self.config.prompt_format, max_batch=self.config.max_batch, prefix=self.prefix
        )[1]

    def mmlu_items(self) -> list[Any]:
        """The MMLU dev items of the retention penalty (`config.mmlu_items`, seeded choice)."""
        if self._mmlu is None:
            from lens_steer.benches import limit_items
            from lens_steer.data.mmlu import load_mmlu

            self._mmlu = limit_items(load_mmlu("dev", data_root=self.data_root), self.config.mmlu_items, seed=self.config.seed)
        return self._mmlu

    def mmlu_accuracy(self, vector: SteeringVector | None = None, coeff: float = 0.0) -> float:
        """Accuracy on the penalty's MMLU items."""
        from lens_steer.benches import run_mmlu

        res = run_mmlu(self.model, self.mmlu_items(), scoring=self.config.scoring, vector=vector, coeff=coeff, n_boot=0, max_batch=self.config.max_batch)
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


# ============================================================================ the whole search
@dataclasses.dataclass(frozen=True)
class IsvResult:
    """One axis's finished search: the best vector (scaled to the mean contrast per layer) with its coefficient, and files."""

    axis: str
    study_name: str
    vector: SteeringVector
    coeff: float
    params: Params
    value: float
    baseline: dict[str, float]
    n_trials: int
    out_dir: Path
    vector_path: Path
    summary: dict[str, Any]


def default_study_name(model: HookedModel, axis: Axis) -> str:
    """'isv-<model>-<axis>'."""
    return f"isv-{model_identity(model).name.replace('/', '_')}-{axis.name}"


def check_corpora(space: SearchSpace, data_root: str | Path | None = None) -> None:
    """Raise a one-line StudyError if a corpus is shorter than the largest num_sents."""
    for corpus in space.corpora:
        size = len(load_corpus(corpus, data_root=data_root))
        if size < space.num_sents[1]:
            raise StudyError(f"search space: num_sents high {space.num_sents[1]} exceeds corpus {corpus!r} ({size} prompts); lower it or drop the corpus")


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
) -> IsvResult:
    """Search one axis's ISV: open/join/resume the study, run trials until it holds `config.n_trials`
    finished trials, then write the ISV outputs into `out_dir`. `storage` defaults to
    `sqlite:///<out_dir>/optuna.db`; "journal:<file>" or any SQLAlchemy URL also work.
    `config` may be None only with `resume` (the stored configuration is used); `n_trials` overrides
    the configured budget. With `resume`, `given` holds the configuration fields the caller set
    explicitly (JSON values): equal to the stored ones they are accepted, a different one is refused.
    `sole_worker`: no other process uses this storage (e.g. a locked run folder's own database), so a
    running trial left by a killed worker is failed and retried at once instead of after the heartbeat grace.
    `objective` replaces the BBQ objective (tests, custom objectives)."""
    ax = axis if isinstance(axis, Axis) else get_axis(axis)
    out = Path(out_dir)
    url = storage if storage is not None else default_storage(out)
    label = redact_url(url)
    if resume and not storage_exists(url):
        raise StudyError(f"cannot resume: storage {label} does not exist; run without --resume to start a study")
    if config is None and not resume:
        raise StudyError("a new search needs a SearchConfig; pass config, or resume=True to use the stored one")
    if config is not None:
        check_corpora(config.space.resolve(int(model.cfg.n_layers)), data_root)
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
    check_corpora(space, data_root)
    write_json(out / "config.json", {**used.to_json(), "axis": ax.name, "study": name, "storage": label, "model": model_identity(model).name})
    cache = ActivationCache(model, space.all_layers, hook=used.hook, data_root=data_root, disk_dir=cache_dir, max_batch=used.max_batch)
    isv = IsvObjective(model, ax, dataclasses.replace(used, space=space), cache=cache, data_root=data_root, baseline=_stored_baseline(study, used))
    if objective is None and (used.objective == "ambig_guarded" or used.mmlu_weight > 0):
        _store_baseline(study, used, isv.baseline())
    started = time.time()
    run_trials(study, objective or isv, space, used.n_trials, seed=used.seed, tpe_startup_trials=used.tpe_startup_trials, progress=progress)
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
            raise StudyError(f"cannot resume study {study_name!r}: {field!r} is not a search config field; valid: {', '.join(sorted(have))}")
        if have[field] != value:
            flag = "--" + field.replace("_", "-")
            what = f"a different {flag} ({_first_difference(have[field], value)})" if isinstance(value, Mapping) and isinstance(have[field], Mapping) else f"{flag} {value!r} (stored: {have[field]!r})"
            raise StudyError(f"cannot resume study {study_name!r} with {what}; drop {flag} or give the stored value, or start a new --study")


def _stored_baseline(study: optuna.Study, config: SearchConfig) -> dict[str, float] | None:
    found = study.user_attrs.get(f"baseline:{config.fingerprint()}")
    return dict(found) if found else None


def _store_baseline(study: optuna.Study, config: SearchConfig, base: Mapping[str, float]) -> None:
    study.set_user_attr(f"baseline:{config.fingerprint()}", dict(base))


def write_isv_outputs(
    study: optuna.Study, isv: IsvObjective, out_dir: str | Path, *, storage_label: str = "", worker_seconds: float | None = None
) -> IsvResult:
    """Write `isv.safetensors` (best trial's vector, scaled to the mean contrast; params, coefficient and study in its
    provenance), `study.json` and the Optuna figures (HTML) into `out_dir`, atomically."""
    out = Path(out_dir)
    best = _best_trial(study)
    if best is None:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run more trials")
    params = dict(best.params)
    params["coeff"] = round(float(params["coeff"]), 10)
    vec = isv.vector(params)
    baseline = isv.baseline()
    ident = model_identity(isv.model)
    prov = {
        **dict(vec.metadata.provenance),
        "operation": "isv",
        "axis": isv.axis.name,
        "study": study.study_name,
        "storage": storage_label,
        "trial": best.number,
        "params": params,
        "coeff": params["coeff"],
        "value": best.value,
        "objective": isv.config.objective,
        "config": isv.config.fingerprint(),
    }
    vec = SteeringVector(dict(vec.directions), dataclasses.replace(vec.metadata, provenance=prov))
    vector_path = out / "isv.safetensors"
    vec.save(vector_path)
    trials = study.get_trials(deepcopy=False)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.state in FINISHED and t.datetime_start and t.datetime_complete]
    states = collections.Counter(t.state.name for t in trials)
    figures, skipped = write_figures(study, out)
    summary = {
        "study": study.study_name,
        "storage": storage_label,
        "model": ident.name,
        "axis": isv.axis.name,
        "system_prompt": system_prompt_mode(isv.model.tokenizer),  # how the persona system prompts reached the model
        "objective": isv.config.objective,
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": params,
        "best_user_attrs": dict(best.user_attrs),
        "consistency_vs_objective": trials_consistency_correlation(trials),
        "baseline": baseline,
        "gain_over_baseline": best.value - baseline.get("objective", float("nan")) if "objective" in baseline else None,
        "n_finished": states.get("COMPLETE", 0) + states.get("PRUNED", 0),
        "trial_states": dict(states),
        "n_validation_items": len(isv.items),
        "timing": {
            "mean_trial_seconds": sum(durations) / len(durations) if durations else None,
            "total_trial_seconds": sum(durations),
            "this_worker_seconds": worker_seconds,
        },
        "cache": {"hits": isv.cache.hits, "misses": isv.cache.misses, "pairs_read": isv.cache.pairs_read} if isv.cache else None,
        "vector": str(vector_path.name),
        "figures": figures,
        "figures_skipped": skipped,
        "config": isv.config.to_json(),
    }
    write_json(out / "study.json", summary)
    return IsvResult(isv.axis.name, study.study_name, vec, float(params["coeff"]), params, float(best.value), baseline, summary["n_finished"], out, vector_path, summary)


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
        "param_importances": lambda: vis.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()),
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
            skipped[name] = f"{type(e).__name__}: {_first_line(e)}"
            continue
        atomic_write_text(out / f"{name}.html", html)
        written.append(f"{name}.html")
    if written and not (out / "plotly.min.js").is_file():
        atomic_write_text(out / "plotly.min.js", plotly.offline.get_plotlyjs())
    return written, skipped


def trial_params_vector(model: HookedModel, params: Mapping[str, Any], *, hook: str = "hook_resid_post", data_root: str | Path | None = None) -> SteeringVector:
    """Rebuild a trial's vector from scratch (no cache): for checking ISV files."""
    layers = parse_layer_spec(params["layers"])
    pairs = persona_pairs(params["corpus"], int(params["num_sents"]), int(params["persona"]), int(params["template"]), tokenizer=model.tokenizer, data_root=data_root)
    return vector_from_activations(pair_activations(model, pairs, layers, hook=hook), params["method"], layers, scale=VECTOR_SCALE)


def isv_pairs(vector: SteeringVector, tokenizer: Any, data_root: str | Path | None = None) -> PairSet:
    """The persona pair set an ISV file was extracted from (from its provenance params)."""
    p = vector.metadata.provenance.get("params")
    if not isinstance(p, Mapping):
        raise LensSteerError("vector has no ISV params in its provenance; it was not written by `lens-steer search`")
    return persona_pairs(p["corpus"], int(p["num_sents"]), int(p["persona"]), int(p["template"]), tokenizer=tokenizer, data_root=data_root)


__all__ = [
    "OBJECTIVES",
    "ActivationCache",
    "IsvObjective",
    "IsvResult",
    "SearchConfig",
    "SearchSpace",
    "TrialReport",
    "default_layer_candidates",
    "default_storage",
    "fail_orphaned_trials",
    "fail_stale_trials",
    "isv_pairs",
    "layer_label",
    "objective_value",
    "open_storage",
    "open_study",
    "parse_layer_spec",
    "redact_url",
    "run_isv_search",
    "run_trials",
    "trial_params_vector",
    "validation_items",
    "write_figures",
    "write_isv_outputs",
]
