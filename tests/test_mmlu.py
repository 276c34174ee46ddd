"""Tests for lens_steer.data.mmlu: subjects, rows, validation with file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lens_steer.data.mmlu import load_mmlu, mmlu_subjects
from lens_steer.errors import DataError

REAL_ROOT = Path(os.environ.get("LENS_STEER_DATA", "/work/shared/data"))
HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


def write(root: Path, split: str, subject: str, body: str) -> Path:
    p = root / "mmlu" / split / f"{subject}_{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(HEADER + body)
    return p


@pytest.fixture
def root(tmp_path):
    write(tmp_path, "test", "anatomy", 'What is 1+1?,1,2,3,4,1\n"Multi\nline, question",a,b,c,d,3\n')
    write(tmp_path, "test", "virology", "Q?,w,x,y,z,0\n")
    write(tmp_path, "dev", "anatomy", "D?,w,x,y,z,2\n")
    return tmp_path


def test_load_fields_and_order(root):
    items = load_mmlu(data_root=root)
    assert [(it.subject, it.index) for it in items] == [("anatomy", 0), ("anatomy", 1), ("virology", 0)]
    first, second = items[0], items[1]
    assert first.question == "What is 1+1?" and first.choices == ("1", "2", "3", "4") and first.label == 1
    assert second.question == "Multi\nline, question" and second.label == 3
    assert [it.label for it in load_mmlu("dev", data_root=root)] == [2]


def test_subjects_and_selection(root):
    assert mmlu_subjects(root) == ["anatomy", "virology"]
    assert mmlu_subjects(root, split="dev") == ["anatomy"]
    assert [it.subject for it in load_mmlu(subjects=["virology"], data_root=root)] == ["virology"]
    assert len(load_mmlu(subjects="anatomy,virology", data_root=root)) == 3
    with pytest.raises(DataError) as e:
        load_mmlu(subjects=["astrology"], data_root=root)
    assert "unknown MMLU subject 'astrology'" in str(e.value) and "anatomy, virology" in str(e.value)
    with pytest.raises(DataError, match="unknown MMLU split 'val'"):
        load_mmlu("val", data_root=root)
    with pytest.raises(DataError, match="empty MMLU subject list; name at least one of anatomy, virology"):
        load_mmlu(subjects=[], data_root=root)


@pytest.mark.parametrize(
    "body, needle",
    [
        ("Q?,a,b,c,d,4\n", "line 2: field 'answer' must be 0, 1, 2 or 3 (got '4')"),
        ("Q?,a,b,c,d,0\nQ2?,a,b,c,d,A\n", "line 3: field 'answer' must be 0, 1, 2 or 3 (got 'A')"),
        ('"two\nlines",a,b,c,d,0\nQ?,a,b,c,0\n', "line 4: expected 6 columns (got 5)"),
        (",a,b,c,d,0\n", "line 2: empty question"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, body, needle):
    p = write(tmp_path, "test", "anatomy", body)
    with pytest.raises(DataError) as e:
        load_mmlu(data_root=tmp_path)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_bad_header_and_missing_folder(tmp_path):
    p = tmp_path / "mmlu" / "test" / "anatomy_test.csv"
    p.parent.mkdir(parents=True)
    p.write_text("q,a,b,c,d,answer\nQ?,a,b,c,d,0\n")
    with pytest.raises(DataError, match="line 1: header must be question,choice0"):
        load_mmlu(data_root=tmp_path)
    with pytest.raises(DataError) as e:
        load_mmlu("dev", data_root=tmp_path)
    assert "mmlu/dev" in str(e.value) and str(tmp_path) in str(e.value)


@pytest.mark.skipif(
    not (REAL_ROOT / "mmlu" / "test").is_dir(),
    reason=f"missing data: shared MMLU data not found at {REAL_ROOT} (set LENS_STEER_DATA)",
)
def test_real_mmlu_counts_from_readme():
    # shared/data/README.md: test 57 subjects, 14,042 questions; dev 5 per subject
    subjects = mmlu_subjects(REAL_ROOT)
    assert len(subjects) == 57
    assert len(load_mmlu("test", data_root=REAL_ROOT)) == 14042
    dev = load_mmlu("dev", data_root=REAL_ROOT)
    assert len(dev) == 285 and {it.subject for it in dev} == set(subjects)
