"""Benchmark runs on the tiny model over real data: records suffice to recompute the metrics."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from lens_steer.benches import limit_bbq, limit_items, run_bbq, run_crows, run_mmlu
from lens_steer.data.bbq import load_bbq
from lens_steer.data.crows import load_crows
from lens_steer.data.mmlu import load_mmlu
from lens_steer.errors import LensSteerError
from lens_steer.evaluate import maybe_steer, score_questions
from lens_steer.benches import bbq_question
from lens_steer.models import load_model
from lens_steer.vectors import SteeringVector, VectorMetadata

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA")


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama", seed=1)


@pytest.fixture(scope="module")
def items():
    return limit_bbq(load_bbq(["Religion"], data_root=DATA), 16, seed=2)


def test_limit_bbq_keeps_whole_variant_groups_and_is_seeded():
    all_items = load_bbq(["Religion"], data_root=DATA)
    a, b = limit_bbq(all_items, 16, seed=2), limit_bbq(all_items, 16, seed=2)
    assert [i.example_id for i in a] == [i.example_id for i in b]
    keys = {i.group_key for i in a}
    sizes = {k: sum(1 for i in all_items if i.group_key == k) for k in keys}
    assert sum(sizes.values()) == len(a) == 16
    assert [i.example_id for i in limit_bbq(all_items, 16, seed=3)] != [i.example_id for i in a]
    with pytest.raises(LensSteerError):
        limit_bbq(all_items, 0)


def test_bbq_records_recompute_the_metrics(model, items):
    r = run_bbq(model, items, scoring="cloze", n_boot=50)
    rec = r.records
    assert len(rec) == len(items)
    acc = np.mean([x["pred"] == x["label"] for x in rec])
    assert r.metrics["overall"]["acc"]["value"] == pytest.approx(acc)
    amb = [x for x in rec if x["context_condition"] == "ambig"]
    unk = np.mean([x["pred"] == x["unknown_index"] for x in amb])
    assert r.metrics["overall"]["unknown_rate_ambig"]["value"] == pytest.approx(unk)
    dis = [x for x in rec if x["context_condition"] == "disambig"]
    nonunk = [x for x in dis if not x["pred_is_unknown"]]
    n_biased = sum(x["pred_is_biased"] for x in nonunk)
    s_dis = 0.0 if n_biased == 0 else 2 * n_biased / len(nonunk) - 1
    assert r.metrics["overall"]["bias_disambig"]["value"] == pytest.approx(s_dis)
    for x in rec:
        assert math.isclose(sum(math.exp(v) for v in x["option_scores"]), 1.0, rel_tol=1e-6)
        assert x["pred"] == int(np.argmax(x["option_scores"]))
    assert r.metrics["category_source"] == {"Religion": "official"}


def test_steered_run_equals_scoring_inside_steer(model, items):
    import torch

    torch.manual_seed(0)
    vec = SteeringVector({2: torch.randn(64)}, VectorMetadata("tiny-llama", 64, processing={f: False for f in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")}))
    r = run_bbq(model, items[:4], scoring="letter", vector=vec, coeff=3.0, n_boot=0)
    with maybe_steer(model, vec, 3.0):
        direct = score_questions(model, [bbq_question(i) for i in items[:4]], scoring="letter")
    base = run_bbq(model, items[:4], scoring="letter", n_boot=0)
    np.testing.assert_allclose([x["option_scores"] for x in r.records], [s.option_scores for s in direct], atol=1e-6)
    assert not np.allclose([x["option_scores"] for x in r.records], [x["option_scores"] for x in base.records])


def test_mmlu_micro_accuracy_is_the_mean_of_correct(model):
    qs = limit_items(load_mmlu("test", subjects=["astronomy", "virology"], data_root=DATA), 12, seed=0)
    r = run_mmlu(model, qs, scoring="letter", n_boot=50)
    assert r.metrics["micro"]["value"] == pytest.approx(np.mean([x["pred"] == x["label"] for x in r.records]))
    subj = {s: np.mean([x["correct"] for x in r.records if x["subject"] == s]) for s in {x["subject"] for x in r.records}}
    assert r.metrics["macro"]["value"] == pytest.approx(np.mean(list(subj.values())))


def test_crows_share_of_more_likely_stereotypes(model):
    pairs = load_crows(["religion"], data_root=DATA)[:6]
    r = run_crows(model, pairs, n_boot=50)
    share = np.mean([x["logprob_more"] > x["logprob_less"] for x in r.records])
    assert r.metrics["overall"]["value"] == pytest.approx(share)
