"""Tests for lens_steer.tasks.crows: the share of pairs whose more-stereotyping sentence is the more likely."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lens_steer.data.crows import load_crows
from lens_steer.models import load_model
from lens_steer.tasks.crows import run_crows

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA")


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama", seed=1)


def test_crows_share_of_more_likely_stereotypes(model):
    pairs = load_crows(["religion"], data_root=DATA)[:6]
    r = run_crows(model, pairs, n_boot=50)
    share = np.mean([x["logprob_more"] > x["logprob_less"] for x in r.records])
    assert r.metrics["overall"]["value"] == pytest.approx(share)
