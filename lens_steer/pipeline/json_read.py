"""Typed reading of results.json parts: each reader takes a JSON value and `where` (the part's dotted name) and
returns the value or raises a one-line `ResultsError` naming that part and the fix."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lens_steer.errors import ResultsError
from lens_steer.stats import Metric

T = TypeVar("T")
FIX = (
    "written by an older lens_steer or cut short; re-run `lens-steer reproduce` with the same options on its folder "
    "(it resumes)"
)


def obj(x: Any, where: str) -> Mapping[str, Any]:
    """`x` when it is a JSON object."""
    if not isinstance(x, Mapping):
        raise ResultsError(f"results.json: {where} is {type(x).__name__}, not a JSON object; {FIX}")
    return x


def need(x: Any, key: str, where: str) -> Any:
    """`x[key]`, refused when `x` is not an object or lacks `key`."""
    o = obj(x, where)
    if key not in o:
        raise ResultsError(f"results.json: {where} lacks {key!r}; {FIX}")
    return o[key]


def get(x: Any, key: str, where: str, read: Callable[[Any, str], T]) -> T:
    """`x[key]` read by `read`, with `where.key` naming it in any error."""
    return read(need(x, key, where), f"{where}.{key}")


def as_dict(x: Any, where: str) -> dict[str, Any]:
    """A copy of the JSON object `x`."""
    return dict(obj(x, where))


def num(x: Any, where: str) -> float:
    """`x` as a float when it is a number (not a bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ResultsError(f"results.json: {where} is {x!r}, not a number; {FIX}")
    return float(x)


def integer(x: Any, where: str) -> int:
    """`x` when it is a whole number (not a bool)."""
    if isinstance(x, bool) or not isinstance(x, int):
        raise ResultsError(f"results.json: {where} is {x!r}, not a whole number; {FIX}")
    return x


def opt_num(x: Any, where: str) -> float | None:
    """None, or `x` as a number."""
    return None if x is None else num(x, where)


def opt_dict(x: Any, where: str) -> dict[str, Any] | None:
    """None, or a copy of the JSON object `x`."""
    return None if x is None else as_dict(x, where)


def string(x: Any, where: str) -> str:
    """`x` when it is a string."""
    if not isinstance(x, str):
        raise ResultsError(f"results.json: {where} is {x!r}, not a string; {FIX}")
    return x


def as_list(x: Any, where: str) -> list[Any]:
    """`x` when it is a list."""
    if not isinstance(x, list):
        raise ResultsError(f"results.json: {where} is {type(x).__name__}, not a list; {FIX}")
    return x


def each(x: Any, where: str, read: Callable[[Any, str], T]) -> dict[str, T]:
    """Every value of the object `x` read by `read`."""
    return {str(k): read(v, f"{where}.{k}") for k, v in obj(x, where).items()}


def metric(x: Any, where: str) -> Metric:
    """A `Metric` from its dict {"value", "ci_low", "ci_high", "n"}."""
    return Metric(*(get(x, k, where, num) for k in ("value", "ci_low", "ci_high")), get(x, "n", where, integer))


def metric_json(m: Metric) -> dict[str, Any]:
    """A Metric as its JSON dict."""
    return m.to_dict()


__all__ = [
    "FIX",
    "as_dict",
    "as_list",
    "each",
    "get",
    "integer",
    "metric",
    "metric_json",
    "need",
    "num",
    "obj",
    "opt_dict",
    "opt_num",
    "string",
]
