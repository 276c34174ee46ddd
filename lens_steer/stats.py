"""Numbers with bootstrap 95% intervals: the `Metric` value, the percentile bootstrap over items (resamples drawn in
bounded chunks, shared by every metric of one call) and McNemar's exact test. Pure Python + NumPy.

Resample r is row r of `numpy.random.default_rng(seed).integers(0, n_items, (n_boot, n_items))` (drawn in
consecutive row chunks when n_boot * n_items exceeds CHUNK_CELLS); `n_boot=0` skips the bootstrap (interval =
point value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lens_steer.errors import LensSteerError

CHUNK_CELLS = 4_000_000  # resample-matrix cells per chunk (bounds memory for large item sets)


class MetricsError(LensSteerError):
    """Predictions that cannot be scored (empty, malformed, or mismatched for a paired comparison)."""


@dataclass(frozen=True)
class Metric:
    """A point value with its bootstrap interval and the number of items it is computed over."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """{"value", "ci_low", "ci_high", "n"} as plain Python numbers."""
        return {
            "value": float(self.value),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "n": int(self.n),
        }


def metrics_to_dict(obj: Any) -> Any:
    """`obj` with every Metric (at any depth in dicts/lists) replaced by its `to_dict()`."""
    if isinstance(obj, Metric):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {k: metrics_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [metrics_to_dict(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def check_boot(n_boot: int, alpha: float) -> None:
    """Refuse a bootstrap size that is not a non-negative integer, or an alpha outside (0, 1)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise MetricsError(f"n_boot must be a non-negative integer (got {n_boot!r})")
    if not 0.0 < alpha < 1.0:
        raise MetricsError(f"alpha must lie strictly between 0 and 1 (got {alpha!r})")


def _count_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resample counts, (rows, n) per chunk, n_boot rows in all: how often each item is drawn."""
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_CELLS // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(rows, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def resampled_sums(features: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) column sums of the (n, k) per-item features over each bootstrap resample."""
    n, k = features.shape
    if n_boot == 0:
        return np.zeros((0, k))
    return np.concatenate([c @ features for c in _count_chunks(n, n_boot, seed)], axis=0)


def interval(boot: np.ndarray, value: float, alpha: float) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution (the point value when there is none)."""
    if boot.size == 0:
        return float(value), float(value)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    data: Any,
    statistic: Callable[..., Any] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    vectorized: bool = False,
) -> Metric:
    """Percentile bootstrap interval of `statistic` over items.

    data: one per-item array (first axis = items), or a tuple of such arrays resampled together.
    statistic: called as statistic(*arrays) -> float (default: mean of the single array). With
    vectorized=True it gets arrays of shape (n_boot, n, ...) and must return n_boot values.
    """
    check_boot(n_boot, alpha)
    arrays = tuple(np.asarray(a) for a in data) if isinstance(data, tuple) else (np.asarray(data),)
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise MetricsError(
            f"bootstrap needs non-empty per-item arrays of one length (got lengths {[len(a) for a in arrays]})"
        )
    if statistic is None:
        if len(arrays) != 1:
            raise MetricsError("bootstrap_ci: give a statistic when resampling several arrays")
        statistic = (lambda x: x.mean(axis=-1)) if vectorized else (lambda x: float(np.mean(x)))
    if vectorized:
        value = float(np.asarray(statistic(*(a[None, ...] for a in arrays))).reshape(-1)[0])
    else:
        value = float(statistic(*arrays))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if n_boot == 0:
        boot = np.zeros(0)
    elif vectorized:
        boot = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=float).reshape(n_boot)
    else:
        boot = np.array([float(statistic(*(a[row] for a in arrays))) for row in idx])
    lo, hi = interval(boot, value, alpha)
    return Metric(value, lo, hi, n)


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p: binomial(gained + lost, 1/2) test on the discordant pairs."""
    if gained < 0 or lost < 0:
        raise MetricsError(f"discordant counts must be non-negative (got {gained}, {lost})")
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    term = tail = 1  # C(n, 0); exact integers, C(n, i + 1) = C(n, i) * (n - i) / (i + 1)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


__all__ = [
    "CHUNK_CELLS",
    "Metric",
    "MetricsError",
    "bootstrap_ci",
    "check_boot",
    "interval",
    "mcnemar_exact",
    "metrics_to_dict",
    "resampled_sums",
]
