"""Tests for lens_steer.tasks.crows: the share of pairs whose more-stereotyping sentence is the more likely."""

from __future__ import annotations

import numpy as np
import pytest
from _tasks_fixtures import DATA, model, needs_bbq  # noqa: F401 (model: fixture)

from lens_steer.data.crows import load_crows
from lens_steer.tasks.crows import run_crows

pytestmark = needs_bbq


def test_crows_share_of_more_likely_stereotypes(model):
    pairs = load_crows(["religion"], data_root=DATA)[:6]
    r = run_crows(model, pairs, n_boot=50)
    share = np.mean([x["logprob_more"] > x["logprob_less"] for x in r.records])
    assert r.metrics["overall"]["value"] == pytest.approx(share)
