"""Tests for lens_steer.methods.search.run: one axis's search end to end on the tiny model, and its one-line
refusals."""

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
    from lens_steer.methods.search.kinds import default_params, trial_values
    from lens_steer.steering.interventions import load_intervention

    space = SearchSpace(
        corpora=("age", "bbq_cloze"),
        num_sents=(4, 8, 4),
        personas=(0, 1),
        templates=(0,),
        coeff=(-1.0, 1.0, 1.0),
        layers=((1,), (2, 3)),
        methods=("pca_diff", "mean_diff"),
    )
    n = len(space.kinds) + 2
    cfg = SearchConfig(space=space, n_trials=n, limit=6, chunk_size=3, scoring="letter", tpe_startup_trials=2)
    seen = []
    res = run_isv_search(tiny, "age", cfg, tmp_path, progress=seen.append)
    assert res.path == tmp_path / "isv.safetensors"
    assert [r.finished for r in seen] == list(range(1, n + 1)) and all(r.n_trials == n for r in seen)
    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    resolved = space.resolve(4)
    # the first stage: one trial per kind at its default point, in the space's order
    assert [t.params for t in trials[: len(space.kinds)]] == [
        trial_values(default_params(k, resolved, 4)) for k in space.kinds
    ]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["best_value"] == best.value and summary["best_trial"] == best.number
    beats = best.value > summary["baseline"]["objective"]
    assert summary["chosen"]["beats_baseline"] == beats and (tmp_path / "intervention.safetensors").is_file() == beats
    if beats:
        chosen = load_intervention(tmp_path / "intervention.safetensors", tiny)
        assert chosen.kind == best.params["kind"] and chosen.metadata.provenance["trial"] == best.number
    # isv.safetensors is the best additive trial's vector (what the ensembles average)
    additive = max((t for t in complete if t.params["kind"] == "additive"), key=lambda t: (t.value, -t.number))
    saved = load_vector(tmp_path / "isv.safetensors", tiny)
    prov = saved.metadata.provenance
    assert (
        prov["study"] == res.study_name
        and prov["trial"] == additive.number
        and prov["params"]["corpus"] == additive.params["corpus"]
        and prov["coeff"] == pytest.approx(additive.params["coeff"])
    )
    assert set(summary["by_kind"]) == {t.params["kind"] for t in complete}
    assert sorted(p.stem for p in (tmp_path / "kinds").glob("*.safetensors")) == sorted(summary["by_kind"])
    if prov["params"]["corpus"] == "age":
        fresh = trial_params_vector(tiny, prov["params"])  # rebuilt without the cache
        assert saved.layers == fresh.layers
        assert all(torch.allclose(saved.directions[k], fresh.directions[k], atol=1e-4) for k in saved.layers)
    assert json.loads((tmp_path / "config.json").read_text())["limit"] == 6
    assert (tmp_path / "optimization_history.html").is_file()
    # a second run of the same command joins the finished study and adds nothing, rebuilding no intervention
    files = [tmp_path / "isv.safetensors", *sorted((tmp_path / "kinds").glob("*.safetensors"))]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = run_isv_search(tiny, "age", cfg, tmp_path)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert again.n_trials == n and len(
        optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    ) == len(study.trials)


def test_unknown_axis_is_one_line(tiny, tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="unknown axis 'klingon'"):
        run_isv_search(tiny, "klingon", SearchConfig(space=SMALL), tmp_path)
    assert not (tmp_path / "optuna.db").exists()


def test_first_stage_needs_a_resolved_space() -> None:
    from lens_steer.errors import StudyError
    from lens_steer.methods.search.run import first_stage
    from lens_steer.methods.search.space import SearchSpace

    with pytest.raises(StudyError, match="resolve"):
        first_stage(SearchSpace())
    space = SearchSpace().resolve(4)
    assert [point["kind"] for point in first_stage(space)] == list(space.kinds)  # one point per kind, in order
