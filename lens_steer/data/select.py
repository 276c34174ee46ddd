"""Which items a study evaluates: one selector from an axis (or BBQ category) to a split's items, capped at a
limit, from a given data source, with seeds; and the seeded caps it uses (`limit_bbq`, `limit_items`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES, OOD_CATEGORIES, get_axis
from lens_steer.data.bbq import BbqItem, load_bbq, normalize_category
from lens_steer.data.splits import select_split
from lens_steer.errors import DataError, LensSteerError


def _stable_rank(seed: int, key: Any) -> str:
    return hashlib.sha256(repr((seed, key)).encode()).hexdigest()


def limit_bbq(items: Sequence[BbqItem], limit: int | None, seed: int = 0) -> list[BbqItem]:
    """At most `limit` items, whole variant groups at a time (in an order set by a seeded hash, a group that
    does not fit in what is left is passed over); file order kept. A `limit` below every group's size gives
    the first `limit` items of the first group, the only case where a group is cut."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise LensSteerError(f"--limit must be positive, got {limit}")
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.category, it.group_key), []).append(i)
    ranked = sorted(groups, key=lambda k: _stable_rank(seed, k))
    chosen: list[int] = []
    for key in ranked:
        if len(chosen) + len(groups[key]) <= limit:
            chosen += groups[key]
    if not chosen:
        chosen = groups[ranked[0]][:limit]
    return [items[i] for i in sorted(chosen)]


def limit_items(items: Sequence[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """At most `limit` items chosen by a seeded hash of their position; order kept."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise LensSteerError(f"--limit must be positive, got {limit}")
    keep = sorted(range(len(items)), key=lambda i: _stable_rank(seed, i))[:limit]
    return [items[i] for i in sorted(keep)]


def bbq_category(target: str) -> str:
    """The BBQ category of an axis name (or alias), or of a BBQ category given as such (e.g. an OOD one)."""
    try:
        return get_axis(target).bbq_category
    except LensSteerError:
        try:
            return normalize_category(target)
        except DataError:
            raise DataError(
                f"unknown axis or BBQ category {target!r}; choose an axis ({', '.join(AXIS_NAMES)}) or a category "
                f"such as {OOD_CATEGORIES[0]}"
            ) from None


def select(
    target: str,
    split: str,
    limit: int | None = None,
    *,
    source: str = "official",
    seed: int = 0,
    split_seed: int = 0,
    data_root: str | Path | None = None,
    generated_dir: str | Path | None = None,
) -> list[BbqItem]:
    """The BBQ items of `target` (an axis or a BBQ category) in `split` ("train", "validation", "test", "all"),
    from `source` ("official", "generated", "mixed": lens_steer.data.bbq.load_bbq), cut into splits by
    `split_seed`, capped at `limit` whole variant groups chosen by `seed`; file order kept. An empty
    selection is a one-line DataError."""
    category = bbq_category(target)
    items = select_split(
        load_bbq([category], data_root=data_root, source=source, generated_dir=generated_dir), split, seed=split_seed
    )
    if not items:
        raise DataError(f"BBQ category {category} ({source}) has no {split} items; check the data under bbq/")
    return limit_bbq(items, limit, seed=seed)


__all__ = ["bbq_category", "limit_bbq", "limit_items", "select"]
