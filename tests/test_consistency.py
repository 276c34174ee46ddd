"""Tests for lens_steer.extract.consistency: the mean cosine by a plain loop and on cases known by hand; the
correlations against scipy's own; per-layer consistency of real activations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from lens_steer.errors import LensSteerError
from lens_steer.extract.consistency import (
    activation_consistency,
    correlation,
    difference_consistency,
    trials_consistency_correlation,
)


def test_cases_known_by_hand():
    pos = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    assert difference_consistency(pos, torch.zeros(2, 2)) == pytest.approx(1.0)  # all differences point one way
    pos2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert difference_consistency(pos2, torch.zeros(2, 2)) == pytest.approx(
        math.cos(math.pi / 4)
    )  # each 45 degrees off the mean
    assert (
        difference_consistency(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.zeros(2, 2)) == 0.0
    )  # mean difference is zero


def test_equals_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(30, 16, generator=g) + 0.5, torch.randn(30, 16, generator=g)
    d = (pos - neg).numpy().astype(float)
    m = d.mean(axis=0)
    expected = np.mean([float(row @ m / (np.linalg.norm(row) * np.linalg.norm(m))) for row in d])
    assert difference_consistency(pos, neg) == pytest.approx(expected, rel=1e-6)
    acts = SimpleNamespace(layers=(3, 5), positive={3: pos, 5: pos}, negative={3: neg, 5: pos})
    got = activation_consistency(acts)
    assert got[3] == pytest.approx(expected, rel=1e-6) and got[5] == 0.0
    with pytest.raises(LensSteerError, match="layer 4 was not read"):
        activation_consistency(acts, [4])


def test_correlations_equal_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    y[3] = y[4]  # a tie
    x[7] = x[8]
    c = correlation(x.tolist(), y.tolist())
    assert c["n"] == 25
    assert c["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert c["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert correlation([1.0, 2.0], [3.0, 4.0]) == {"n": 2, "pearson": None, "spearman": None}
    assert correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["pearson"] is None


def test_trials_correlation_reads_complete_trials():
    trials = [
        SimpleNamespace(value=v, user_attrs={"consistency": c})
        for v, c in [(0.1, 0.2), (0.3, 0.5), (0.2, 0.4), (0.5, 0.9)]
    ]
    trials.append(SimpleNamespace(value=None, user_attrs={"consistency": 0.3}))  # pruned or failed
    trials.append(SimpleNamespace(value=0.4, user_attrs={}))  # logged before consistency existed
    c = trials_consistency_correlation(trials)
    assert c["n"] == 4 and c["spearman"] == pytest.approx(1.0)


def test_search_logs_consistency_per_trial_and_its_correlation(tmp_path):
    import json

    import optuna

    from lens_steer.data.root import resolve_data_root
    from lens_steer.extract.activations import pair_activations
    from lens_steer.extract.pairs import persona_pairs
    from lens_steer.methods.search.run import run_isv_search
    from lens_steer.methods.search.space import SearchConfig, SearchSpace
    from lens_steer.model.load import load_model
    from lens_steer.specs import parse_layers

    try:
        root = resolve_data_root()
    except LensSteerError:
        pytest.skip("missing data: shared data (prompt_corpora, bbq) not found")
    if not (root / "prompt_corpora" / "age.json").is_file():
        pytest.skip("missing data: prompt_corpora/age.json")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tiny = load_model("tiny-llama", seed=0)
    space = SearchSpace(
        kinds=("additive",),
        corpora=("age",),
        num_sents=(4, 8, 4),
        personas=(0, 1),
        templates=(0,),
        coeff=(-1.0, 1.0, 1.0),
        layers=((1,), (2, 3)),
        methods=("pca_diff",),
    )
    cfg = SearchConfig(space=space, n_trials=3, limit=6, chunk_size=6, scoring="letter", tpe_startup_trials=2)
    res = run_isv_search(tiny, "age", cfg, tmp_path)
    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:  # recomputed from a fresh read of the trial's pairs
        layers = parse_layers(t.params["layers"])
        pairs = persona_pairs(
            t.params["corpus"],
            int(t.params["num_sents"]),
            int(t.params["persona"]),
            int(t.params["template"]),
            tokenizer=tiny.tokenizer,
        )
        by_layer = activation_consistency(pair_activations(tiny, pairs, layers), layers)
        assert t.user_attrs["consistency"] == pytest.approx(sum(by_layer.values()) / len(by_layer), abs=1e-5)
    summary = json.loads((tmp_path / "study.json").read_text())
    expected = correlation([t.user_attrs["consistency"] for t in done], [t.value for t in done])
    assert summary["consistency_vs_objective"]["n"] == len(done) == expected["n"]
    assert summary["consistency_vs_objective"]["spearman"] == expected["spearman"]
