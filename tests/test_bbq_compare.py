"""Tests for lens_steer.data.bbq_compare: each difference planted by hand is reported, and only it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lens_steer.data.bbq_compare import compare_with_official
from lens_steer.data.bbq_generate import generate_category, random_free_templates
from lens_steer.data.root import resolve_data_root

CAT = "Sexual_orientation"


@pytest.fixture(scope="module")
def off() -> list[dict[str, Any]]:
    with (resolve_data_root(None) / "bbq" / "data" / f"{CAT}.jsonl").open() as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def free() -> frozenset[tuple[str, str]]:
    return random_free_templates(CAT)


def test_official_against_itself(off: list[dict[str, Any]], free: frozenset[tuple[str, str]]) -> None:
    rep = compare_with_official(CAT, off, copy.deepcopy(off), random_free=free)
    assert rep.ok and rep.counts_match
    assert rep.exact_rows == len(off)
    assert sorted(rep.identical_templates) == sorted(free) and not rep.differing_templates
    n_free = sum((r["question_index"], r["additional_metadata"]["version"]) in free for r in off)
    assert rep.identical_rows == rep.random_free_rows == n_free
    assert sum(g for g, _ in rep.cell_counts.values()) == len(off)
    assert "MATCH" in rep.to_text() and "DIFFERENCES" not in rep.to_text()


def test_generated_matches(off: list[dict[str, Any]], free: frozenset[tuple[str, str]]) -> None:
    rep = compare_with_official(CAT, generate_category(CAT, seed=0), off, random_free=free)
    assert rep.ok, rep.to_text()


def test_dropped_item_shows_in_its_cells(off: list[dict[str, Any]]) -> None:
    gen = copy.deepcopy(off[4:])  # drop the first item (its four rows)
    rep = compare_with_official(CAT, gen, off)
    qi = off[0]["question_index"]
    expected = {(qi, r["question_polarity"], r["context_condition"]) for r in off[:4]}
    assert set(rep.mismatched_cells) == expected
    for c in expected:
        g, o = rep.cell_counts[c]
        assert o - g == 1
    assert not rep.ok and rep.n_generated == len(off) - 4


def test_label_and_schema_changes(off: list[dict[str, Any]]) -> None:
    gen = copy.deepcopy(off)
    amb = next(i for i, r in enumerate(gen) if r["context_condition"] == "ambig")
    r = gen[amb]
    r["label"] = next(i for i in range(3) if r["answer_info"][f"ans{i}"][1] != "unknown")
    gen[1]["extra"] = 1
    rep = compare_with_official(CAT, gen, off)
    n_amb = sum(x["context_condition"] == "ambig" for x in off)
    g, o = rep.properties["ambig rows: label is the 'unknown' answer"]
    assert o == 1.0 and g == pytest.approx(1 - 1 / n_amb)
    assert any("row keys" in s for s in rep.schema_differences)
    assert not rep.properties_match and not rep.ok


def test_random_parts_ignored_but_text_changes_caught(
    off: list[dict[str, Any]], free: frozenset[tuple[str, str]]
) -> None:
    gen = copy.deepcopy(off)
    # rotate answers of the first item and rename its unknown answer: same row up to random parts
    for r in gen[:4]:
        order = [2, 0, 1]
        texts = [r[f"ans{i}"] for i in order]
        infos = [r["answer_info"][f"ans{i}"] for i in order]
        unk = next(i for i in range(3) if infos[i][1] == "unknown")
        texts[unk] = infos[unk][0] = "Undetermined" if texts[unk] != "Undetermined" else "Unknown"
        r["label"] = order.index(r["label"])
        for i in range(3):
            r[f"ans{i}"], r["answer_info"][f"ans{i}"] = texts[i], infos[i]
    key = next(iter(sorted(free)))
    victim = next(r for r in gen if (r["question_index"], r["additional_metadata"]["version"]) == key)
    victim["context"] += " Changed."
    rep = compare_with_official(CAT, gen, off, random_free=free)
    assert rep.exact_rows == len(off) - 5
    assert set(rep.differing_templates) == {key}
    gn, on, common = rep.differing_templates[key]
    assert gn == on and common == on - 1
    assert rep.identical_rows == rep.random_free_rows - 1
    assert "DIFFERENCES" in rep.to_text()
