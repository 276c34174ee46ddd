"""Tests for lens_steer.data.bbq_v2: the paper's split files against the official BBQ rows they were cut from
(README: train = rows 0-299, validation = 300-599, test = 600-1199), and one-line errors naming file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lens_steer.data.bbq import load_bbq
from lens_steer.data.bbq_v2 import V2_AXES, load_v2_items, load_v2_train_pairs, v2_axis
from lens_steer.errors import DataError

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq_v2_splits").is_dir(), reason=f"missing data: bbq_v2_splits under {DATA}; set LENS_STEER_DATA"
)
COMPLETE = {
    "age": "Age",
    "appearance": "Physical_appearance",
    "disability": "Disability_status",
    "nationality": "Nationality",
    "religion": "Religion",
}


def test_sizes_and_ids():
    for ax in V2_AXES:
        val, test = load_v2_items(ax, "validation", DATA), load_v2_items(ax, "test", DATA)
        assert len(load_v2_train_pairs(ax, DATA)) == 300 and len(val) == 300 and len(test) == 600
        assert [i.example_id for i in val] == list(range(300, 600)) and [i.example_id for i in test] == list(
            range(600, 1200)
        )


@pytest.mark.parametrize("axis", sorted(COMPLETE))
def test_rows_equal_the_official_file(axis):
    official = {i.example_id: i for i in load_bbq([COMPLETE[axis]], data_root=DATA)}
    for it in load_v2_items(axis, "validation", DATA) + load_v2_items(axis, "test", DATA):
        o = official[it.example_id]
        assert (it.context, it.question, it.answers, it.label, it.biased_indices, it.context_condition) == (
            o.context,
            o.question,
            o.answers,
            o.label,
            o.biased_indices,
            o.context_condition,
        )


def test_axis_names():
    assert (
        v2_axis("ses") == "socioeconomic"
        and v2_axis("Gender_identity") == "gender"
        and v2_axis("appearance") == "appearance"
    )
    with pytest.raises(DataError, match="has no v2 split"):
        v2_axis("sexual_orientation")
    with pytest.raises(DataError, match="unknown v2 axis 'klingon'"):
        v2_axis("klingon")


def test_bad_files_are_one_line(tmp_path):
    root = tmp_path / "bbq_v2_splits"
    (root / "bbq_validate").mkdir(parents=True)
    (root / "bbq_train").mkdir()
    src = (DATA / "bbq_v2_splits" / "bbq_validate" / "age_validate.csv").read_text().splitlines()
    bad = src[:2] + [src[2].replace(",2\n", ",x\n").rsplit(",", 1)[0] + ",x"]
    (root / "bbq_validate" / "age_validate.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(DataError) as e:
        load_v2_items("age", "validation", tmp_path)
    assert "age_validate.csv line 3: column 'label' must be an integer" in str(e.value) and "\n" not in str(e.value)
    (root / "bbq_train" / "age_train.json").write_text('[{"positive": "a"}]')
    with pytest.raises(DataError, match="entry 0: expected non-empty 'positive' and 'negative'"):
        load_v2_train_pairs("age", tmp_path)
    with pytest.raises(DataError, match="missing data file bbq_v2_splits/bbq_test/age_test.csv"):
        load_v2_items("age", "test", tmp_path)
