"""Deterministic, seeded train / validation / test splits that keep each item's variants together.

Within each category, the distinct `group_key`s (one per filled template: its ambiguous/disambiguated
x negative/non-negative variants) are ordered by SHA-256 of (seed, key) and cut at the cumulative
fractions, so a whole group always lands in one split and the split depends only on the seed and the
category's set of groups.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Sequence
from typing import Any, Protocol, TypeVar

from lens_steer.errors import DataError

SPLITS: tuple[str, ...] = ("train", "validation", "test")


class Groupable(Protocol):
    """Anything with a category and a group key (e.g. BbqItem)."""

    @property
    def category(self) -> str: ...

    @property
    def group_key(self) -> Hashable: ...


T = TypeVar("T", bound=Groupable)


def _rank(seed: int, key: Any) -> bytes:
    """A seed-dependent, process-independent sort key for a group."""
    text = json.dumps([seed, key], ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).digest()


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise DataError(
            "split fractions must be three non-negative numbers (train, validation, test) summing to 1 (got "
            f"{tuple(fractions)})"
        )
    return fr  # type: ignore[return-value]


def split_items(
    items: Sequence[T], *, seed: int = 0, fractions: Sequence[float] = (0.5, 0.25, 0.25)
) -> dict[str, list[T]]:
    """Split items into "train", "validation", "test", whole groups per category; item order is kept."""
    fr = _check_fractions(fractions)
    by_cat: dict[str, set] = {}
    for it in items:
        by_cat.setdefault(it.category, set()).add(it.group_key)
    where: dict[tuple[str, Hashable], str] = {}
    for cat, keys in by_cat.items():
        ordered = sorted(keys, key=lambda k: _rank(seed, [cat, k]))
        g = len(ordered)
        cut1 = round(fr[0] * g)
        cut2 = round((fr[0] + fr[1]) * g)
        for i, k in enumerate(ordered):
            where[(cat, k)] = "train" if i < cut1 else "validation" if i < cut2 else "test"
    out: dict[str, list[T]] = {s: [] for s in SPLITS}
    for it in items:
        out[where[(it.category, it.group_key)]].append(it)
    return out


def select_split(
    items: Sequence[T], split: str, seed: int = 0, fractions: Sequence[float] = (0.5, 0.25, 0.25)
) -> list[T]:
    """The items of one split ("train", "validation", "test"), or all of them for "all"."""
    if split == "all":
        return list(items)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}, all")
    return split_items(items, seed=seed, fractions=fractions)[split]
