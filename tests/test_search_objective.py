"""Tests for lens_steer.methods.search.objective: the objective by hand, reused residuals equal full forwards, and the
items depend on the data seed only."""

from __future__ import annotations

import pytest
import torch
from _study_fixtures import needs_data, tiny  # noqa: F401 (tiny: a fixture)

from lens_steer.methods.search.objective import IsvObjective, objective_value, validation_items
from lens_steer.methods.search.space import SearchConfig, SearchSpace
from lens_steer.steering.interventions import Additive


def test_objective_values_by_hand() -> None:
    m = {"acc": 0.6, "acc_ambig": 0.5, "acc_disambig": 0.7, "bias_ambig": -0.2, "bias_disambig": 0.1}
    base = {"acc_disambig": 0.8}
    assert objective_value(m, SearchConfig(objective="acc")) == 0.6
    assert objective_value(m, SearchConfig(objective="bias")) == pytest.approx(-0.15)
    # floor 0.8 - 0.02 = 0.78, shortfall 0.08, penalty 10 -> 0.5 - 0.8
    assert objective_value(m, SearchConfig(objective="ambig_guarded"), base) == pytest.approx(0.5 - 0.8)
    assert objective_value(m, SearchConfig(objective="ambig_guarded", ambig_tolerance=0.2), base) == pytest.approx(0.5)


@needs_data
@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_objective_reusing_residuals_equals_full_forwards(tiny, scoring: str) -> None:
    from lens_steer.axes import get_axis

    space = SearchSpace(
        corpora=("age",),
        num_sents=(4, 4, 4),
        personas=(0, 1),
        templates=(0,),
        coeff=(-3.0, 3.0, 1.0),
        layers=((1,), (2, 3), (3,)),
        methods=("mean_diff",),
    )
    cfg = SearchConfig(space=space, n_trials=1, limit=8, chunk_size=4, scoring=scoring)
    cached = IsvObjective(tiny, get_axis("age"), cfg)
    plain = IsvObjective(tiny, get_axis("age"), cfg, items=cached.items, residual_cache_bytes=0)
    assert (
        plain.residual_cache is None and cached.residual_cache is not None and cached.residual_cache.layers == (1, 2, 3)
    )
    trials = [
        {"corpus": "age", "num_sents": 4, "persona": p, "template": 0, "coeff": c, "layers": lay, "method": "mean_diff"}
        for p, c, lay in [(0, 3.0, "2,3"), (1, -3.0, "3"), (0, 2.0, "1"), (1, 3.0, "2,3")]
    ]
    for params in trials:
        fast = cached.predictions(cached.items, Additive.of(cached.vector(params), float(params["coeff"])))
        slow = plain.predictions(plain.items, Additive.of(plain.vector(params), float(params["coeff"])))
        assert [p.pred for p in fast] == [p.pred for p in slow]
        assert all(
            torch.allclose(torch.tensor(a.option_logprobs), torch.tensor(b.option_logprobs), atol=1e-4)
            for a, b in zip(fast, slow)
        )
    assert cached.residual_cache.hits > 0  # later trials ran from stored residuals


@needs_data
def test_the_sampler_seed_does_not_change_the_validation_items() -> None:
    from lens_steer.axes import get_axis

    age = get_axis("age")
    items = [
        [it.example_id for it in validation_items(age, SearchConfig(limit=16, seed=s, data_seed=d))]
        for s, d in ((0, 0), (7, 0), (0, 3))
    ]
    assert items[0] == items[1]  # another sampler seed: the same items, in the same order
    assert items[0] != items[2]  # another data seed: other items (or order)


@needs_data
def test_the_objective_reports_each_chunk_and_stops_when_pruned(tiny) -> None:
    """A pruner that prunes every report stops the BBQ objective after its first chunk; the value it reported is
    the accuracy of that chunk's predictions, counted here."""
    import optuna

    from lens_steer.axes import get_axis

    space = SearchSpace(
        corpora=("age",),
        num_sents=(4, 4, 4),
        personas=(0,),
        templates=(0,),
        coeff=(2.0, 2.0, 1.0),
        layers=((2,),),
        methods=("mean_diff",),
        kinds=("additive",),
    )
    isv = IsvObjective(tiny, get_axis("age"), SearchConfig(space=space, n_trials=1, limit=12, chunk_size=4))
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )  # accuracy is never >= 2
    trial = study.ask()
    params = isv.space.suggest(trial)
    with pytest.raises(optuna.TrialPruned, match="pruned after 4 items"):
        isv(params, trial)
    chunk = isv.predictions(isv.items[:4], Additive.of(isv.vector(params), 2.0))
    assert list(study.get_trials()[0].intermediate_values.values()) == [sum(p.pred == p.label for p in chunk) / 4]
    # without pruning the same trial scores every chunk: one report per chunk but the last, then the value
    free = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    t2 = free.ask()
    value = isv(space.suggest(t2), t2)
    steps = free.get_trials()[0].intermediate_values
    assert sorted(steps) == [0, 1] and len(isv.items) == 12
    whole = isv.predictions(isv.items, Additive.of(isv.vector(params), 2.0))
    assert value == pytest.approx(sum(p.pred == p.label for p in whole) / 12)
