"""Tests for lens_steer.extract.optimize on the tiny model: the fit's loss is the cloze evaluator's own cross-entropy
(read by the scorer, a second code path), fitting lowers that cross-entropy under the real steering path, and bad
input is refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _study_fixtures import tiny  # noqa: F401 (a fixture)

from lens_steer.errors import LensSteerError
from lens_steer.extract.optimize import OptimizeConfig, fit_optimized_vector
from lens_steer.forward.questions import Question
from lens_steer.forward.scoring import score_steered

ITEMS = [
    (Question("A grandson and a grandfather met.", "Who forgot?", ("The grandson", "The grandfather", "Unknown")), 2),
    (Question("The nurse paid for lunch.", "Who paid?", ("The nurse", "The doctor", "Cannot tell")), 0),
    (Question("Two neighbours argued.", "Who shouted?", ("The tall one", "The short one", "Not known")), 2),
    (Question("The doctor fixed the bike.", "Who fixed it?", ("The nurse", "The doctor", "Unknown")), 1),
]


def evaluator_ce(model, intervention=None) -> float:
    """The mean cross-entropy of each item's target over its answers' summed log-likelihoods, as the scorer reads
    them (cloze, reference prompt)."""
    scores = score_steered(model, [q for q, _ in ITEMS], intervention=intervention, scoring="cloze")
    logliks = torch.tensor([s.option_logliks for s in scores], dtype=torch.float64)
    return float(torch.nn.functional.cross_entropy(logliks, torch.tensor([t for _, t in ITEMS])))


def test_the_first_step_loss_is_the_evaluators_cross_entropy(tiny):  # noqa: F811
    # one batch of every item, one epoch: the only step runs at v = 0 (the L2 term is 0 there)
    one = OptimizeConfig(epochs=1, batch_size=len(ITEMS))
    iv = fit_optimized_vector(tiny, ITEMS, 1, one)
    assert iv.metadata.provenance["steps"] == 1
    assert iv.metadata.provenance["final_loss"] == pytest.approx(evaluator_ce(tiny), rel=1e-4)


def test_fitting_lowers_the_evaluators_cross_entropy_under_steering(tiny):  # noqa: F811
    cfg = OptimizeConfig(epochs=20, batch_size=2, lr=0.2, l2=0.0)
    iv = fit_optimized_vector(tiny, ITEMS, 1, cfg)
    assert iv.layers == (1,) and float(iv.vector.directions[1].norm()) > 0
    assert evaluator_ce(tiny, iv) < evaluator_ce(tiny) - 0.01
    again = fit_optimized_vector(tiny, ITEMS, 1, cfg)  # seeded: the same vector
    assert torch.equal(again.vector.directions[1], iv.vector.directions[1])
    other = fit_optimized_vector(tiny, ITEMS, 1, dataclasses.replace(cfg, seed=1))
    assert not torch.equal(other.vector.directions[1], iv.vector.directions[1])


def test_bad_input_is_one_line(tiny):  # noqa: F811
    with pytest.raises(LensSteerError, match="needs training items"):
        fit_optimized_vector(tiny, [], 1)
    with pytest.raises(LensSteerError, match="layer must be in"):
        fit_optimized_vector(tiny, ITEMS, int(tiny.cfg.n_layers) - 1)
    with pytest.raises(LensSteerError, match="optimize config"):
        OptimizeConfig(epochs=0)
