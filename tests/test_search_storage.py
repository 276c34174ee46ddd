"""Tests for lens_steer.methods.search.storage: create / join / resume rules and storage URLs."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from _study_fixtures import SMALL

from lens_steer.errors import StudyError
from lens_steer.methods.search.run import run_isv_search
from lens_steer.methods.search.space import SearchConfig
from lens_steer.methods.search.storage import open_storage, open_study, redact_url

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_resume_missing_study_leaves_storage_untouched(tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    from lens_steer.model.load import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("tiny-llama")
    with pytest.raises(StudyError, match="storage .* does not exist"):
        run_isv_search(model, "age", None, tmp_path / "run", storage=url, resume=True)
    assert not db.exists()
    store = open_storage(url)
    open_study(store, "other", config=SearchConfig(space=SMALL))
    with pytest.raises(StudyError, match=r"cannot resume study 'missing': not found .* holds other"):
        open_study(store, "missing", resume=True, storage_label=url)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["other"]
    # joining with a different configuration is refused, the stored one is kept
    with pytest.raises(StudyError, match="different configuration .*objective"):
        open_study(store, "other", config=SearchConfig(space=SMALL, objective="bias"))
    assert optuna.load_study(study_name="other", storage=url).user_attrs["lens_steer_config"]["objective"] == "acc"
    # resume uses the stored configuration with a new budget
    _, used = open_study(store, "other", config=SearchConfig(space=SMALL, n_trials=7), resume=True)
    assert used is not None and used.n_trials == 7


def test_bad_storage_urls_are_one_line_and_redacted(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as e:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/db")
    msg = str(e.value)
    assert "s3cret" not in msg and "alice:***@" in msg and "\n" not in msg
    with pytest.raises(StudyError, match="folder .* does not exist"):
        open_storage(f"sqlite:///{tmp_path}/nope/optuna.db")
    with pytest.raises(StudyError, match="cannot open storage nonsense://x"):
        open_storage("nonsense://x")
    assert redact_url("mysql://u:p@h/db") == "mysql://u:***@h/db"


def test_a_study_created_by_another_worker_between_look_and_create_is_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lens_steer.methods.search import storage as storage_module

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    store = open_storage(url)
    first, _ = open_study(store, "race", config=SearchConfig(space=SMALL))  # the other worker's study
    looks = [[]]  # our first look at the names misses it, as when both workers look before either creates
    real_names = storage_module.study_names
    monkeypatch.setattr(storage_module, "study_names", lambda s: looks.pop() if looks else real_names(s))
    joined, used = open_study(store, "race", config=SearchConfig(space=SMALL))
    assert (
        joined.study_name == first.study_name
        and len(optuna.get_all_study_summaries(url)) == 1
        and used == SearchConfig(space=SMALL)
    )
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["race"]
