"""Tests for lens_steer.data.splits: whole groups per split, per category, deterministic for a seed."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from lens_steer.data.splits import SPLITS, select_split, split_items
from lens_steer.errors import DataError

REAL_ROOT = Path(os.environ.get("LENS_STEER_DATA", "/work/shared/data"))


@dataclass(frozen=True)
class Item:
    category: str
    group_key: tuple
    idx: int


def make_items(groups_per_cat=40, cats=("Age", "Religion"), per_group=4):
    out = []
    for c in cats:
        for g in range(groups_per_cat):
            for v in range(per_group):
                out.append(Item(c, (c, f"template-{g}"), len(out)))
    return out


def where_is(split: dict[str, list]) -> dict:
    w = {}
    for name, its in split.items():
        for it in its:
            w[it.idx] = name
    return w


def test_no_group_straddles_splits_and_nothing_is_lost():
    items = make_items()
    s = split_items(items, seed=3)
    assert set(s) == set(SPLITS)
    assert sorted(it.idx for part in s.values() for it in part) == list(range(len(items)))
    by_group = defaultdict(set)
    w = where_is(s)
    for it in items:
        by_group[(it.category, it.group_key)].add(w[it.idx])
    assert all(len(v) == 1 for v in by_group.values())


def test_fractions_are_per_category_counts_of_groups():
    items = make_items(groups_per_cat=40)
    s = split_items(items, seed=0, fractions=(0.5, 0.25, 0.25))
    for c in ("Age", "Religion"):
        n = {k: len({it.group_key for it in v if it.category == c}) for k, v in s.items()}
        assert n == {"train": 20, "validation": 10, "test": 10}
    s = split_items(items, seed=0, fractions=(0.0, 0.5, 0.5))
    assert len(s["train"]) == 0 and len(s["validation"]) == len(s["test"]) == 2 * 20 * 4


def test_same_seed_same_split_other_seed_other_split():
    items = make_items()
    a, b = split_items(items, seed=1), split_items(items, seed=1)
    assert where_is(a) == where_is(b)
    assert where_is(split_items(items, seed=2)) != where_is(a)
    # the order of the input does not change which split an item is in
    assert where_is(split_items(list(reversed(items)), seed=1)) == where_is(a)


def test_item_order_is_kept_within_a_split():
    s = split_items(make_items(), seed=0)
    for part in s.values():
        assert [it.idx for it in part] == sorted(it.idx for it in part)


def test_a_category_split_does_not_depend_on_other_categories():
    both = make_items(cats=("Age", "Religion"))
    age_only = [it for it in both if it.category == "Age"]
    w_both, w_age = where_is(split_items(both, seed=5)), where_is(split_items(age_only, seed=5))
    assert all(w_both[it.idx] == w_age[it.idx] for it in age_only)


def test_select_split_and_bad_names():
    items = make_items()
    s = split_items(items, seed=4)
    assert select_split(items, "validation", seed=4) == s["validation"]
    assert select_split(items, "all") == items
    with pytest.raises(DataError) as e:
        select_split(items, "dev")
    assert "unknown split 'dev'" in str(e.value) and "train, validation, test" in str(e.value)
    for bad in [(0.5, 0.5), (0.6, 0.3, 0.3), (-0.1, 0.6, 0.5)]:
        with pytest.raises(DataError, match="fractions"):
            split_items(items, fractions=bad)


@pytest.mark.skipif(
    not (REAL_ROOT / "bbq" / "data").is_dir(),
    reason=f"missing data: shared BBQ data not found at {REAL_ROOT} (set LENS_STEER_DATA)",
)
def test_real_bbq_split_keeps_variants_and_blocks_together():
    from lens_steer.data.bbq import load_bbq

    items = load_bbq(data_root=REAL_ROOT)
    s = split_items(items, seed=0)
    split_of = {}
    for name, part in s.items():
        for it in part:
            split_of[(it.category, it.example_id)] = name
    assert len(split_of) == len(items)
    # official files hold a template's four variants as ids 4k..4k+3: they must share a split
    blocks = defaultdict(set)
    for (cat, eid), name in split_of.items():
        blocks[(cat, eid // 4)].add(name)
    assert all(len(v) == 1 for v in blocks.values())
    for name in SPLITS:
        assert {it.category for it in s[name]} == {it.category for it in items}
    assert abs(len(s["train"]) / len(items) - 0.5) < 0.02
