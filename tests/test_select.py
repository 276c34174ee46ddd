"""Tests for lens_steer.data.select: whole variant groups under a limit, and one selector for every study's items."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from lens_steer.data.bbq import load_bbq
from lens_steer.data.select import bbq_category, limit_bbq, limit_items, select
from lens_steer.data.splits import select_split
from lens_steer.errors import DataError, LensSteerError

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)


def test_limit_bbq_keeps_whole_variant_groups_and_is_seeded():
    all_items = load_bbq(["Religion"], data_root=DATA)
    a, b = limit_bbq(all_items, 16, seed=2), limit_bbq(all_items, 16, seed=2)
    assert [i.example_id for i in a] == [i.example_id for i in b]
    keys = {i.group_key for i in a}
    sizes = {k: sum(1 for i in all_items if i.group_key == k) for k in keys}
    assert sum(sizes.values()) == len(a) == 16
    assert [i.example_id for i in limit_bbq(all_items, 16, seed=3)] != [i.example_id for i in a]
    with pytest.raises(LensSteerError):
        limit_bbq(all_items, 0)


@pytest.mark.parametrize("limit", [6, 10, 17])
def test_limit_bbq_never_cuts_a_variant_group_when_the_limit_is_not_a_multiple(limit: int):
    all_items = load_bbq(["Religion"], data_root=DATA)  # every group holds its four variants
    chosen = limit_bbq(all_items, limit, seed=2)
    sizes = Counter(i.group_key for i in all_items)
    got = Counter(i.group_key for i in chosen)
    assert all(got[k] == sizes[k] for k in got)  # each chosen group whole
    assert len(chosen) == 4 * (limit // 4)  # as many whole groups of four as fit
    assert set(got) == {
        i.group_key for i in limit_bbq(all_items, 4 * (limit // 4), seed=2)
    }  # the same groups as the multiple below


def test_limit_bbq_below_one_group_takes_part_of_the_first():
    all_items = load_bbq(["Religion"], data_root=DATA)
    first_group = [i for i in all_items if i.group_key == limit_bbq(all_items, 4, seed=2)[0].group_key]
    assert limit_bbq(all_items, 2, seed=2) == first_group[:2]


def test_limit_items_is_seeded_and_keeps_order():
    items = list(range(50))
    a = limit_items(items, 7, seed=1)
    assert a == sorted(a) and len(set(a)) == 7 and a == limit_items(items, 7, seed=1) != limit_items(items, 7, seed=2)
    assert limit_items(items, None) == items == limit_items(items, 80)


def test_select_is_load_then_split_then_limit():
    by_hand = limit_bbq(select_split(load_bbq(["Age"], data_root=DATA), "validation", seed=3), 12, seed=5)
    assert select("age", "validation", 12, seed=5, split_seed=3, data_root=DATA) == by_hand
    assert (
        select("Age", "validation", 12, seed=5, split_seed=3, data_root=DATA) == by_hand
    )  # the category name works too
    assert bbq_category("race") == "Race_ethnicity" and bbq_category("race_x_ses") == "Race_x_SES"
    with pytest.raises(DataError, match="unknown axis or BBQ category 'martian'"):
        select("martian", "test", data_root=DATA)
