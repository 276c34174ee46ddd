"""Tests for lens_steer.methods.search.run: one axis's search end to end on the tiny model, and its one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from _study_fixtures import SMALL, needs_data, tiny  # noqa: F401 (tiny: a fixture)

from lens_steer.errors import LensSteerError
from lens_steer.methods.isv import trial_params_vector
from lens_steer.methods.search.run import run_isv_search
from lens_steer.methods.search.space import SearchConfig, SearchSpace
from lens_steer.steering.vectors import load_vector

optuna.logging.set_verbosity(optuna.logging.ERROR)


@needs_data
def test_bbq_search_end_to_end_on_tiny_model(tiny, tmp_path: Path) -> None:
    space = SearchSpace(
        corpora=("age",),
        num_sents=(4, 8, 4),
        personas=(0, 1),
        templates=(0,),
        coeff=(-1.0, 1.0, 1.0),
        layers=((1,), (2, 3)),
        methods=("pca_diff", "mean_diff"),
    )
    cfg = SearchConfig(space=space, n_trials=3, limit=6, chunk_size=3, scoring="letter", tpe_startup_trials=2)
    seen = []
    res = run_isv_search(tiny, "age", cfg, tmp_path, progress=seen.append)
    assert res.path == tmp_path / "isv.safetensors"
    assert [r.finished for r in seen] == [1, 2, 3] and all(r.n_trials == 3 for r in seen)
    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    best = max(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: (t.value, -t.number)
    )
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["best_value"] == best.value and summary["best_trial"] == best.number
    saved = load_vector(tmp_path / "isv.safetensors", tiny)
    prov = saved.metadata.provenance
    assert (
        prov["study"] == res.study_name
        and prov["params"]["corpus"] == best.params["corpus"]
        and prov["coeff"] == pytest.approx(best.params["coeff"])
    )
    fresh = trial_params_vector(tiny, prov["params"])  # rebuilt without the cache
    assert saved.layers == fresh.layers
    assert all(torch.allclose(saved.directions[k], fresh.directions[k], atol=1e-4) for k in saved.layers)
    assert json.loads((tmp_path / "config.json").read_text())["limit"] == 6
    assert (tmp_path / "optimization_history.html").is_file()
    # a second run of the same command joins the finished study and adds nothing
    again = run_isv_search(tiny, "age", cfg, tmp_path)
    assert again.n_trials == 3 and len(
        optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    ) == len(study.trials)


def test_unknown_axis_is_one_line(tiny, tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="unknown axis 'klingon'"):
        run_isv_search(tiny, "klingon", SearchConfig(space=SMALL), tmp_path)
    assert not (tmp_path / "optuna.db").exists()
