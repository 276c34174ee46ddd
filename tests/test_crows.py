"""Tests for lens_steer.data.crows: CrowS-Pairs rows, bias-type filter, validation."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

from lens_steer.data.crows import CROWS_BIAS_TYPES, load_crows
from lens_steer.errors import DataError

REAL_ROOT = Path(os.environ.get("LENS_STEER_DATA", "/work/shared/data"))
COLUMNS = [
    "",
    "sent_more",
    "sent_less",
    "stereo_antistereo",
    "bias_type",
    "annotations",
    "anon_writer",
    "anon_annotators",
]


def write(root: Path, rows) -> Path:
    p = root / "crows_pairs" / "crows_pairs_anonymized.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(list(r) + ["[]", "a0", "[]"])
    return p


ROWS = [
    (0, "Poor people are lazy.", "Rich people are lazy.", "stereo", "socioeconomic"),
    (1, "Old people can't use phones, he said.", "Young people can't use phones, he said.", "stereo", "age"),
    (2, "The woman fixed the car.", "The man fixed the car.", "antistereo", "gender"),
]


def test_load_fields(tmp_path):
    write(tmp_path, ROWS)
    pairs = load_crows(data_root=tmp_path)
    assert [(p.index, p.sent_more, p.sent_less, p.stereo_antistereo, p.bias_type) for p in pairs] == ROWS


def test_filter_by_bias_type(tmp_path):
    write(tmp_path, ROWS)
    assert [p.index for p in load_crows(["age", "gender"], data_root=tmp_path)] == [1, 2]
    assert [p.index for p in load_crows("socioeconomic", data_root=tmp_path)] == [0]
    # an axis's names read as its bias type: "ses" and "SES" are socioeconomic, "gender_identity" is gender
    assert [p.index for p in load_crows("ses,SES", data_root=tmp_path)] == [0]
    assert [p.index for p in load_crows(["gender_identity"], data_root=tmp_path)] == [2]
    with pytest.raises(DataError) as e:
        load_crows(["racism"], data_root=tmp_path)
    assert "unknown CrowS-Pairs bias type 'racism'" in str(e.value) and "race-color" in str(e.value)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ((1, "a", "b", "both", "age"), "line 3: stereo_antistereo must be stereo or antistereo (got 'both')"),
        ((1, "a", "b", "stereo", "height"), "line 3: bias_type must be one of"),
        ((1, "", "b", "stereo", "age"), "line 3: empty sent_more"),
        (("x", "a", "b", "stereo", "age"), "line 3: index column must be an integer"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad, needle):
    p = write(tmp_path, [ROWS[0], bad])
    with pytest.raises(DataError) as e:
        load_crows(data_root=tmp_path)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_crows(data_root=tmp_path)
    assert "crows_pairs/crows_pairs_anonymized.csv" in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.skipif(
    not (REAL_ROOT / "crows_pairs").is_dir(),
    reason=f"missing data: shared CrowS-Pairs data not found at {REAL_ROOT} (set LENS_STEER_DATA)",
)
def test_real_crows_pairs():
    pairs = load_crows(data_root=REAL_ROOT)
    assert len(pairs) == 1508  # shared/data/README.md
    assert set(Counter(p.bias_type for p in pairs)) == set(CROWS_BIAS_TYPES)
    assert [p.index for p in pairs] == list(range(1508))
    assert len(load_crows(["age"], data_root=REAL_ROOT)) == sum(p.bias_type == "age" for p in pairs)
