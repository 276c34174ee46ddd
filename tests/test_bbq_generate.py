"""Tests for lens_steer.data.bbq_generate: counts, cells and rows against the official BBQ files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lens_steer.data.bbq_generate import (
    CATEGORIES,
    generate_category,
    random_free_templates,
    write_generated,
)
from lens_steer.data.root import resolve_data_root
from lens_steer.errors import DataError

COMPLETE = ("Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation")
# published BBQ sizes (Parrish et al. 2022, the released data files)
PUBLISHED = {
    "Age": 3680,
    "Disability_status": 1556,
    "Gender_identity": 5672,
    "Nationality": 3080,
    "Physical_appearance": 1576,
    "Race_ethnicity": 6880,
    "Race_x_SES": 11160,
    "Race_x_gender": 15960,
    "Religion": 1200,
    "SES": 6864,
    "Sexual_orientation": 864,
}

ROOT = resolve_data_root(None)
_CACHE: dict[tuple[str, int], list[dict[str, Any]]] = {}


def gen(cat: str, seed: int = 0) -> list[dict[str, Any]]:
    if (cat, seed) not in _CACHE:
        _CACHE[(cat, seed)] = generate_category(cat, seed=seed)
    return _CACHE[(cat, seed)]


def official(cat: str, folder: str = "data") -> list[dict[str, Any]]:
    with (ROOT / "bbq" / folder / f"{cat}.jsonl").open() as f:
        return [json.loads(line) for line in f]


def key_text(r: dict[str, Any]) -> tuple[Any, ...]:
    """Row without its random parts: answers as a set with their info, the label as the answer text."""
    info = r["answer_info"]
    unknown = [i for i in range(3) if info[f"ans{i}"][1] == "unknown"]
    named = frozenset((r[f"ans{i}"], *info[f"ans{i}"]) for i in range(3) if i not in unknown)
    target = None if r["label"] in unknown else r[f"ans{r['label']}"]
    md = r["additional_metadata"]
    return (
        r["question_index"],
        r["question_polarity"],
        r["context_condition"],
        r["context"],
        r["question"],
        md["version"],
        md["subcategory"],
        json.dumps(md["stereotyped_groups"]),
        md["source"],
        named,
        target,
    )


def test_categories_cover_all_template_files() -> None:
    files = {
        p.name[len("new_templates - ") : -len(".csv")]
        for p in (ROOT / "bbq" / "templates").glob("new_templates - *.csv")
    }
    assert set(CATEGORIES) == files - {"Filler_items"}


@pytest.mark.parametrize("cat", sorted(PUBLISHED))
def test_row_counts_match_published(cat: str) -> None:
    rows = gen(cat)
    assert len(rows) == PUBLISHED[cat]
    assert [r["example_id"] for r in rows] == list(range(len(rows)))
    assert {r["category"] for r in rows} == {cat}


@pytest.mark.parametrize("cat", COMPLETE)
def test_cell_counts_match_official(cat: str) -> None:
    def cells(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
        return Counter((r["question_index"], r["question_polarity"], r["context_condition"]) for r in rows)

    assert cells(gen(cat)) == cells(official(cat))


@pytest.mark.parametrize("cat", COMPLETE)
def test_random_free_templates_reproduce_official_rows(cat: str) -> None:
    free = random_free_templates(cat)
    off = official(cat)

    def pick(rows: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
        return Counter(key_text(r) for r in rows if (r["question_index"], r["additional_metadata"]["version"]) in free)

    picked = pick(off)
    assert pick(gen(cat)) == picked
    assert sum(picked.values()) > 0 or cat in ("Nationality", "Religion")  # these two sample vocabulary everywhere


@pytest.mark.parametrize("cat", COMPLETE)
def test_value_sets_match_official(cat: str) -> None:
    def values(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
        return {
            "groups": {v[1] for r in rows for v in r["answer_info"].values()},
            "unknown": {v[0] for r in rows for v in r["answer_info"].values() if v[1] == "unknown"},
            "stereotyped": {json.dumps(r["additional_metadata"]["stereotyped_groups"]) for r in rows},
            "subcategory": {r["additional_metadata"]["subcategory"] for r in rows},
            "version": {r["additional_metadata"]["version"] for r in rows},
            "keys": {",".join(r) + "|" + ",".join(r["additional_metadata"]) for r in rows},
        }

    assert values(gen(cat)) == values(official(cat))


@pytest.mark.parametrize("cat", ("Gender_identity", "Race_ethnicity", "SES"))
def test_partial_official_rows_agree_on_value_sets(cat: str) -> None:
    off = official(cat, "partial")
    qis = {r["question_index"] for r in off}
    mine = [r for r in gen(cat) if r["question_index"] in qis]
    for name, get in (
        ("groups", lambda r: {v[1] for v in r["answer_info"].values()}),
        ("stereotyped", lambda r: {json.dumps(r["additional_metadata"]["stereotyped_groups"])}),
    ):
        assert set().union(*map(get, mine)) == set().union(*map(get, off)), name
    # the official rows sit at the same example_id with the same template and cell
    by_id = {r["example_id"]: r for r in gen(cat)}
    fields = ("question_index", "question_polarity", "context_condition")
    assert all(tuple(by_id[r["example_id"]][f] for f in fields) == tuple(r[f] for f in fields) for r in off)


@pytest.mark.parametrize("cat", sorted(PUBLISHED))
def test_four_variants_stay_together_and_labels(cat: str) -> None:
    rows = gen(cat)
    for b in range(0, len(rows), 4):
        block = rows[b : b + 4]
        assert len({(r["ans0"], r["ans1"], r["ans2"], json.dumps(r["answer_info"])) for r in block}) == 1
        assert {(r["question_polarity"], r["context_condition"]) for r in block} == {
            ("neg", "ambig"),
            ("neg", "disambig"),
            ("nonneg", "ambig"),
            ("nonneg", "disambig"),
        }
        ambig = next(r["context"] for r in block if r["context_condition"] == "ambig")
        for r in block:
            groups = [r["answer_info"][f"ans{i}"][1] for i in range(3)]
            assert groups.count("unknown") == 1
            if r["context_condition"] == "ambig":
                assert groups[r["label"]] == "unknown"
            else:
                assert groups[r["label"]] != "unknown"
                assert r["context"].startswith(ambig) and len(r["context"]) > len(ambig)


@pytest.mark.parametrize("cat", ("Race_x_SES", "Race_x_gender"))
def test_intersectional_variants(cat: str) -> None:
    rows = gen(cat)
    subs = Counter(r["additional_metadata"]["subcategory"] for r in rows)
    assert subs == {f"intersectional_{x}": len(rows) // 3 for x in "abc"}
    for r in rows:
        named = [v[1] for v in r["answer_info"].values() if v[1] != "unknown"]
        assert len(named) == 2 and all(named)
        (var1, race1), (var2, race2) = ((g.split("-")[0], g.split("-")[-1]) for g in named)
        same_race, same_var = race1 == race2, var1 == var2
        expected = {
            "intersectional_a": (True, False),
            "intersectional_b": (False, True),
            "intersectional_c": (False, False),
        }
        assert (same_race, same_var) == expected[r["additional_metadata"]["subcategory"]], r


def loaded(rows: list[dict[str, Any]], source: str) -> list[Any]:
    """Rows through the loader (validation, then each disambiguated item's ambiguous context attached)."""
    from lens_steer.data.bbq import attach_ambig_contexts, parse_bbq_row

    return attach_ambig_contexts(
        [parse_bbq_row(r, file=f"{source}.jsonl", line=n, source=source) for n, r in enumerate(rows, 1)]
    )


def item_roles(it: Any) -> tuple[Any, ...]:
    """What the loader derives from a row, answers by text (their order and the unknown answer's phrasing are
    random): the two people, the gold answer (None: the unknown one), the biased answers, the ambiguous context a
    disambiguated item extends, and the rest of the row."""
    people = [i for i in range(3) if i != it.unknown_index]
    return (
        it.question_index,
        it.question_polarity,
        it.context_condition,
        it.context,
        it.question,
        frozenset(it.answers[i] for i in people),
        None if it.label == it.unknown_index else it.answers[it.label],
        frozenset(it.answers[i] for i in it.biased_indices),
        it.ambig_context,
        it.subcategory,
        it.stereotyped_groups,
    )


@pytest.mark.parametrize("cat", COMPLETE)
def test_the_loader_reads_generated_rows_as_it_reads_the_official_ones(cat: str) -> None:
    """On the templates that use no random vocabulary, the generated rows load into the same items as the official
    rows: the same gold, unknown and biased answers (lm-eval's rules), the same ambiguous contexts."""
    free = random_free_templates(cat)

    def roles(rows: list[dict[str, Any]], source: str) -> Counter[tuple[Any, ...]]:
        chosen = [r for r in rows if (r["question_index"], r["additional_metadata"]["version"]) in free]
        return Counter(item_roles(it) for it in loaded(chosen, source))

    theirs = roles(official(cat), "official")
    assert roles(gen(cat), "generated") == theirs
    assert sum(theirs.values()) > 0 or cat in ("Nationality", "Religion")  # these two sample vocabulary everywhere


@pytest.mark.parametrize("cat", sorted(PUBLISHED))
def test_every_generated_row_loads_with_its_ambiguous_partner(cat: str) -> None:
    """Every row passes the loader, and each disambiguated item finds the ambiguous context it extends, as in the
    official files (where every disambiguated row has its partner)."""
    items = loaded(gen(cat), "generated")
    assert len(items) == PUBLISHED[cat]
    disamb = [it for it in items if it.context_condition == "disambig"]
    assert len(disamb) == len(items) // 2 and all(
        it.ambig_context and it.context.startswith(it.ambig_context) for it in disamb
    )
    if cat in COMPLETE:  # the official file has the same share of items with exactly one biased answer per condition
        ours, theirs = (
            Counter((it.context_condition, len(it.biased_indices)) for it in loaded(rows, source))
            for rows, source in ((gen(cat), "generated"), (official(cat), "official"))
        )
        assert set(ours) == set(theirs)


def test_deterministic_for_a_seed() -> None:
    a = generate_category("Nationality", seed=3)
    assert a == generate_category("Nationality", seed=3)
    b = gen("Nationality", 4)
    assert a != b and len(a) == len(b)
    free = random_free_templates("Age")
    pick = lambda rows: Counter(  # noqa: E731
        key_text(r) for r in rows if (r["question_index"], r["additional_metadata"]["version"]) in free
    )  # noqa: E731
    assert pick(generate_category("Age", seed=5)) == pick(gen("Age"))


def test_write_generated(tmp_path: Path) -> None:
    paths = write_generated(["Religion", "Sexual_orientation"], tmp_path, seed=0)
    assert set(paths) == {"Religion", "Sexual_orientation"}
    for cat, p in paths.items():
        assert p == tmp_path / f"{cat}.jsonl"
        assert [json.loads(line) for line in p.read_text().splitlines()] == gen(cat)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["Religion.jsonl", "Sexual_orientation.jsonl"]


def test_unknown_category_and_missing_templates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Racism"):
        generate_category("Racism", seed=0)
    with pytest.raises(DataError, match="not found"):
        generate_category("Age", seed=0, data_root=tmp_path)
