"""Tests for lens_steer.data.root: where the data root comes from and how missing files are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

import lens_steer
from lens_steer.data.root import ENV_VAR, default_data_root, require_file, resolve_data_root
from lens_steer.errors import DataError


def test_explicit_root_wins_over_environment(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv(ENV_VAR, str(b))
    assert resolve_data_root(a) == a
    assert resolve_data_root(str(a)) == a


def test_environment_used_without_explicit_root(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_data_root() == tmp_path
    assert resolve_data_root(None) == tmp_path


def test_missing_explicit_root_is_one_line_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        resolve_data_root(missing)
    msg = str(e.value)
    assert str(missing) in msg and "--data-dir" in msg and "\n" not in msg


def test_missing_environment_root_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(DataError) as e:
        resolve_data_root()
    assert ENV_VAR in str(e.value) and str(tmp_path / "gone") in str(e.value)


def test_default_root_is_shared_data_beside_the_repo(monkeypatch):
    # the repo is the folder that holds the lens_steer package
    expected = Path(lens_steer.__file__).resolve().parent.parent.parent / "shared" / "data"
    assert default_data_root() == expected
    monkeypatch.delenv(ENV_VAR, raising=False)
    if expected.is_dir():
        assert resolve_data_root() == expected
    else:
        with pytest.raises(DataError, match="LENS_STEER_DATA"):
            resolve_data_root()


def test_require_file(tmp_path):
    (tmp_path / "mmlu").mkdir()
    f = tmp_path / "mmlu" / "x.csv"
    f.write_text("a\n")
    assert require_file(tmp_path, "mmlu/x.csv") == f
    with pytest.raises(DataError) as e:
        require_file(tmp_path, "mmlu/y.csv")
    msg = str(e.value)
    assert "mmlu/y.csv" in msg and str(tmp_path) in msg and "\n" not in msg
    # a folder is not a file
    with pytest.raises(DataError):
        require_file(tmp_path, "mmlu")


def test_content_fingerprint_follows_names_and_bytes_not_location(tmp_path):
    import hashlib

    from lens_steer.data.root import content_fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "x.json").write_text("[1]")
        (root / "sub" / "y.csv").write_text("q,r\n")
    assert content_fingerprint(a) == content_fingerprint(b)  # same content elsewhere: same digest
    (tmp_path / "link").symlink_to(a)
    assert content_fingerprint(tmp_path / "link") == content_fingerprint(a)
    (b / "sub" / "y.csv").write_text("q,s\n")
    assert content_fingerprint(b) != content_fingerprint(a)
    (b / "sub" / "y.csv").write_text("q,r\n")
    (b / "sub" / "y.csv").rename(b / "sub" / "z.csv")
    assert content_fingerprint(b) != content_fingerprint(a)  # a renamed file changes it
    assert content_fingerprint(a / "x.json") == hashlib.sha256(b"[1]").hexdigest()[:16]
    assert content_fingerprint(tmp_path / "none") == "absent"
