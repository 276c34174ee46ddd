"""Tests for lens_steer.axes: the registry agrees with the data on disk and the names resolve."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lens_steer.axes import AXES, AXIS_NAMES, OOD_CATEGORIES, Axis, get_axis
from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError
from lens_steer.extract.pairs import CORPORA, READY_PAIRS

try:
    DATA = resolve_data_root()
except LensSteerError:
    DATA = Path("/nonexistent-lens-steer-data")
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="missing data: shared data folder not available (set LENS_STEER_DATA)"
)


def test_nine_axes_with_the_spec_names():
    assert AXIS_NAMES == (
        "age",
        "disability",
        "gender_identity",
        "nationality",
        "physical_appearance",
        "race_ethnicity",
        "religion",
        "ses",
        "sexual_orientation",
    )
    assert all(isinstance(a, Axis) and AXES[a.name] is a for a in AXES.values())


@needs_data
def test_bbq_categories_are_the_bbq_file_names():
    stems = {p.stem for p in (DATA / "bbq" / "data").glob("*.jsonl")}
    stems |= {p.stem for p in (DATA / "bbq" / "partial").glob("*.jsonl")}
    assert {a.bbq_category for a in AXES.values()} == stems


@needs_data
def test_each_bbq_file_category_field_matches_its_axis():
    for a in AXES.values():
        path = DATA / "bbq" / "data" / f"{a.bbq_category}.jsonl"
        if not path.exists():
            path = DATA / "bbq" / "partial" / f"{a.bbq_category}.jsonl"
        with path.open() as f:
            first = json.loads(f.readline())
        assert first["category"] == a.bbq_category


@needs_data
def test_ood_categories_have_templates_and_are_not_axes():
    names = {p.name for p in (DATA / "bbq" / "templates").iterdir()}
    for cat in OOD_CATEGORIES:
        assert f"new_templates - {cat}.csv" in names
        assert cat not in {a.bbq_category for a in AXES.values()}


@needs_data
def test_default_corpora_exist():
    for a in AXES.values():
        assert a.default_corpus in CORPORA
        assert (DATA / "prompt_corpora" / f"{a.default_corpus}.json").is_file()


@needs_data
def test_crows_bias_types_cover_the_csv():
    with (DATA / "crows_pairs" / "crows_pairs_anonymized.csv").open(newline="") as f:
        types = {r["bias_type"] for r in csv.DictReader(f)}
    assert {a.crows_bias_type for a in AXES.values()} == types


@needs_data
def test_ready_pairs_name_existing_files():
    for a in AXES.values():
        for name in a.ready_pairs:
            assert name in READY_PAIRS
            assert (DATA / "prompt_corpora" / "pairs" / f"{name}.json").is_file()


@pytest.mark.parametrize(
    "given, expected",
    [
        ("age", "age"),
        ("Age", "age"),
        ("Disability_status", "disability"),
        ("disability status", "disability"),
        ("Gender_identity", "gender_identity"),
        ("gender", "gender_identity"),
        ("Gender Identity", "gender_identity"),
        ("race", "race_ethnicity"),
        ("Race_ethnicity", "race_ethnicity"),
        ("race-ethnicity", "race_ethnicity"),
        ("race/ethnicity", "race_ethnicity"),
        ("race-color", "race_ethnicity"),
        ("SES", "ses"),
        ("socioeconomic", "ses"),
        ("sexuality", "sexual_orientation"),
        ("sexual-orientation", "sexual_orientation"),
        ("Physical appearance", "physical_appearance"),
        ("NATIONALITY", "nationality"),
        ("religion", "religion"),
    ],
)
def test_get_axis_resolves_names_and_aliases(given, expected):
    assert get_axis(given) is AXES[expected]


def test_every_axis_resolves_from_its_bbq_category_and_crows_type():
    for a in AXES.values():
        assert get_axis(a.bbq_category) is a
        assert get_axis(a.name.upper()) is a
        if a.crows_bias_type:
            assert get_axis(a.crows_bias_type) is a


@pytest.mark.parametrize("bad", ["colour", "", "Race_x_gender", "race_x_ses"])
def test_unknown_axis_is_a_one_line_error_listing_axes(bad):
    with pytest.raises(LensSteerError) as info:
        get_axis(bad)
    msg = str(info.value)
    assert "\n" not in msg
    for name in AXIS_NAMES:
        assert name in msg


def test_axis_is_frozen():
    with pytest.raises(AttributeError):
        AXES["age"].default_corpus = "race"  # type: ignore[misc]


def spellings(name: str) -> set[str]:
    """`name` as a user may write it: as given, lower, upper, title case, with '_' written as ' ' or '-'."""
    forms = {name, name.lower(), name.upper(), name.title()}
    return forms | {f.replace("_", sep) for f in forms for sep in (" ", "-")}


def test_every_name_in_the_tables_resolves_to_its_axis():
    """Computed from the tables: each axis's canonical name, BBQ category, CrowS-Pairs type, v2 file name, aliases,
    and its own prompt corpus (a default corpus no other axis shares), in every spelling."""
    owners: dict[str, set[str]] = {}
    for a in AXES.values():
        owners.setdefault(a.default_corpus, set()).add(a.name)
    for a in AXES.values():
        names = {a.name, a.bbq_category, *a.aliases} | {n for n in (a.crows_bias_type, a.v2_name) if n}
        if owners[a.default_corpus] == {a.name}:
            names.add(a.default_corpus)
        assert names <= set(a.names) | {a.default_corpus}
        for n in names:
            for form in spellings(n):
                assert get_axis(form) is a, (form, a.name)


def test_no_name_is_claimed_by_two_axes():
    seen: dict[str, str] = {}
    for a in AXES.values():
        for n in a.names:
            key = n.lower().replace("-", "_").replace(" ", "_")
            assert seen.setdefault(key, a.name) == a.name, n


@needs_data
def test_v2_names_are_the_v2_file_names():
    stems = {p.name.removesuffix("_test.csv") for p in (DATA / "bbq_v2_splits" / "bbq_test").glob("*_test.csv")}
    assert {a.v2_name for a in AXES.values()} - {None} == stems


def test_each_loader_reads_every_name_of_an_axis():
    """The BBQ category, CrowS-Pairs type and v2 name resolvers map each of an axis's names to its own."""
    from lens_steer.data.bbq import normalize_category
    from lens_steer.data.bbq_v2 import v2_axis
    from lens_steer.data.crows import crows_bias_type

    for a in AXES.values():
        for n in a.names:
            assert normalize_category(n) == a.bbq_category and crows_bias_type(n) == a.crows_bias_type
            if a.v2_name:
                assert v2_axis(n) == a.v2_name


@needs_data
@pytest.mark.parametrize("name", ["ses", "SES", "socioeconomic", "Disability_status", "sexuality"])
def test_the_pair_builders_take_any_axis_name(name):
    from lens_steer.extract.pairs import crows_pairs, load_corpus, persona_pairs

    axis = get_axis(name)
    pairs = persona_pairs(name, 3, 0, 0, data_root=DATA)
    assert pairs.provenance["corpus"] == axis.default_corpus
    assert load_corpus(axis.default_corpus, data_root=DATA)[0] in pairs.positives[0]
    assert load_corpus(name, data_root=DATA) == load_corpus(axis.default_corpus, data_root=DATA)
    assert crows_pairs(name, limit=2, data_root=DATA).provenance["bias_type"] == axis.crows_bias_type


def test_an_unknown_name_everywhere_is_one_line_listing_the_canonical_names():
    from lens_steer.extract.pairs import persona_pairs

    for call in (lambda: get_axis("klingon"), lambda: persona_pairs("klingon", 3, 0, 0)):
        with pytest.raises(LensSteerError) as info:
            call()
        msg = str(info.value)
        assert "'klingon'" in msg and "\n" not in msg and all(n in msg for n in AXIS_NAMES), msg
