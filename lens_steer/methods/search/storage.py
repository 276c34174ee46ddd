"""Where studies live: Optuna storages from a URL (in memory, a journal file, any SQLAlchemy database) with a
heartbeat, so a killed worker's trial is failed and retried, and `open_study`'s create / join / resume rules."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalStorage

from lens_steer.errors import StudyError
from lens_steer.methods.search.space import SearchConfig

JOURNAL_PREFIX = "journal:"
CONFIG_ATTR = "lens_steer_config"  # the study's user attr holding its SearchConfig


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """How a journal study's workers show they are alive: a beat every `interval` s; a running trial silent for
    `grace` s is failed and retried (at most `max_retry` times)."""

    interval: int
    grace: int
    max_retry: int | None


class HeartbeatJournalStorage(JournalStorage):
    """A journal storage whose workers beat by `heartbeat` (Optuna's own heartbeat covers only RDB storages)."""

    def __init__(self, backend: BaseJournalBackend, heartbeat: Heartbeat) -> None:
        super().__init__(backend)
        self.heartbeat = heartbeat


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
    times); journal storages (a `HeartbeatJournalStorage`) get the same behaviour from the heartbeat
    `lens_steer.methods.search.workers.run_trials` writes through Optuna's public trial API.
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
                raise StudyError(
                    f"cannot open journal storage {url}: folder {path.parent} does not exist; create it first"
                )
            try:
                from optuna.storages.journal import JournalFileBackend

                return HeartbeatJournalStorage(
                    JournalFileBackend(str(path)), Heartbeat(heartbeat_interval, grace, max_retry)
                )
            except (OSError, ValueError) as e:
                raise StudyError(f"cannot open journal storage {url}: {first_line(e)}") from None
        f = _sqlite_file(url)
        if f is not None and not f.parent.is_dir():
            raise StudyError(f"cannot open storage {url}: folder {f.parent} does not exist; create it first")
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=heartbeat_interval, grace_period=grace, **_retry_kwargs(max_retry)
                )
            except ImportError as e:  # Optuna re-raises a missing driver as a bare ImportError
                name = getattr(e.__cause__, "name", None) or getattr(e, "name", None) or "its database driver"
                raise StudyError(
                    f"cannot open storage {redact_url(url)}: Python module {name!r} is missing; install the driver "
                    "(for PostgreSQL: pip install 'psycopg[binary]')"
                ) from None
            except Exception as e:  # SQLAlchemy raises many types (ArgumentError, OperationalError, ...)
                if attempt < 4 and _schema_race(
                    e
                ):  # workers starting together both create the tables: the later one retries
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise StudyError(
                    f"cannot open storage {redact_url(url)}: {type(e).__name__}: {first_line(e)}; check the URL, "
                    "server and credentials"
                ) from None
        raise AssertionError("unreachable")


def _schema_race(e: BaseException) -> bool:
    """Whether opening a storage failed because another process was creating the same tables just then."""
    text = str(e).lower()
    return (
        type(e).__name__ == "IntegrityError"
        or "already exists" in text
        or "database is locked" in text
        or "unique constraint" in text
    )


def retry_callback(max_retry: int | None) -> Any:
    """Optuna's callback that re-queues a trial whose worker stopped beating (renamed in Optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def _retry_kwargs(max_retry: int | None) -> dict[str, Any]:
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    key = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    return {key: retry_callback(max_retry)}


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
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
        raise StudyError(
            f"cannot resume study {study_name!r}: not found in {storage_label} ({have}); run without --resume to "
            "start it"
        )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=(config.pruner_startup_trials if config else 5), n_warmup_steps=0
    )
    if exists:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        stored_obj = study.user_attrs.get(CONFIG_ATTR)
        stored = (
            SearchConfig.from_json(stored_obj, source=f"study {study_name!r} stored config") if stored_obj else None
        )
        if resume:
            use = stored if stored is not None else config
            if use is not None and config is not None:
                use = dataclasses.replace(use, n_trials=config.n_trials)
        else:
            if stored is not None and config is not None and stored.fingerprint() != config.fingerprint():
                field = first_difference(stored.judged_json(), config.judged_json())
                raise StudyError(
                    f"study {study_name!r} already exists in {storage_label} with a different configuration ({field}); "
                    "add --resume to continue it with its stored configuration, or choose another --study name"
                )
            use = config if config is not None else stored
        if use is not None:
            study.pruner = optuna.pruners.MedianPruner(n_startup_trials=use.pruner_startup_trials, n_warmup_steps=0)
        return study, use
    try:
        directions = ["maximize"] * (3 if config is not None and config.objective == "pareto" else 1)
        study = optuna.create_study(study_name=study_name, storage=storage, directions=directions, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it since we looked: join it
        return open_study(storage, study_name, config=config, resume=resume, storage_label=storage_label)
    if config is not None:
        study.set_user_attr(CONFIG_ATTR, config.to_json())
    study.set_user_attr("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return study, config


def first_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    """The first key (dotted path, sorted order) where two JSON objects differ, with both values; "" when equal."""
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            found = first_difference(x, y, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return f"{prefix}{key}: stored {x!r}, given {y!r}"
    return ""


__all__ = [
    "CONFIG_ATTR",
    "JOURNAL_PREFIX",
    "Heartbeat",
    "HeartbeatJournalStorage",
    "default_storage",
    "first_difference",
    "first_line",
    "open_storage",
    "open_study",
    "redact_url",
    "retry_callback",
    "storage_exists",
    "study_names",
]
