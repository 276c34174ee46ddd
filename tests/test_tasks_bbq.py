"""Tests for lens_steer.tasks.bbq on the tiny model over real data: records suffice to recompute the metrics."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from _tasks_fixtures import DATA, model, needs_bbq  # noqa: F401 (model: fixture)

from lens_steer.data.bbq import load_bbq
from lens_steer.data.select import limit_bbq
from lens_steer.forward.generation import PARSE_RULES, parse_answer
from lens_steer.steering.vectors import SteeringVector, VectorMetadata
from lens_steer.tasks.bbq import bbq_result_metrics, bbq_unparsed_counts, run_bbq
from lens_steer.tasks.metrics import BbqPrediction

pytestmark = needs_bbq


@pytest.fixture(scope="module")
def items():
    return limit_bbq(load_bbq(["Religion"], data_root=DATA), 16, seed=2)


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
    assert r.parse_counts is None and all(
        x["reply"] is None and x["parse_rule"] is None and not x["unparsed"] for x in rec
    )
    assert r.metrics["unparsed"]["overall"] == {"n": 0, "n_items": len(items), "rate": 0.0}


def U(eid, cat, cond, pred, label=0):
    """A hand-built prediction: unknown answer 2, biased answer 0."""
    return BbqPrediction(eid, cat, cond, "neg", pred, label, 2, 0, ())


def test_unparsed_counts_by_hand():
    preds = [
        U(1, "Age", "ambig", -1, 2),
        U(2, "Age", "ambig", 2, 2),
        U(3, "Age", "disambig", -1),
        U(4, "Age", "disambig", -1, 1),
        U(5, "Age", "disambig", 0),
        U(6, "Religion", "ambig", 0, 2),
        U(7, "Religion", "disambig", -1),
        U(8, "SES", "ambig", 0, 2),
    ]
    c = bbq_unparsed_counts(preds)
    assert c["overall"] == {"n": 4, "n_items": 8, "rate": 4 / 8}
    assert c["ambig"] == {"n": 1, "n_items": 4, "rate": 1 / 4} and c["disambig"] == {
        "n": 3,
        "n_items": 4,
        "rate": 3 / 4,
    }
    assert list(c["by_category"]) == ["Age", "Religion", "SES"]
    assert c["by_category"]["Age"] == {
        "overall": {"n": 3, "n_items": 5, "rate": 3 / 5},
        "ambig": {"n": 1, "n_items": 2, "rate": 1 / 2},
        "disambig": {"n": 2, "n_items": 3, "rate": 2 / 3},
    }
    assert c["by_category"]["Religion"]["disambig"] == {"n": 1, "n_items": 1, "rate": 1.0}
    assert c["by_category"]["SES"]["disambig"] == {"n": 0, "n_items": 0, "rate": 0.0}  # no such items: rate 0
    sources = [SimpleNamespace(category=cat, source="official") for cat in ("Age", "Religion", "SES")]
    m = bbq_result_metrics(preds, sources, n_boot=0)
    assert m["unparsed"] == c
    # correct: 2 (unknown, label 2) and 5 (label 0): 2 of 8; the unparsed items are wrong
    assert m["overall"]["acc"]["value"] == pytest.approx(2 / 8) and m["by_category"]["Age"]["acc"][
        "value"
    ] == pytest.approx(2 / 5)
    # non-unknown answers, disambig: 5 (biased) alone -> 2 * 1/1 - 1;
    # ambig: 6 and 8, both biased -> (1 - 1/4) * (2 * 2/2 - 1)
    # (had the unparsed answers counted as non-unknown: 2 * 1/4 - 1 and (1 - 1/4) * (2 * 2/3 - 1))
    assert m["overall"]["bias_disambig"]["value"] == pytest.approx(1.0) and m["overall"]["bias_ambig"][
        "value"
    ] == pytest.approx(0.75)


def test_bbq_generate_records_carry_the_reply_and_count_unparsed(model, items):
    r = run_bbq(model, items[:4], scoring="generate", n_boot=0)
    for x in r.records:
        parsed = parse_answer(x["reply"], x["options"])  # the record's reply parses to its answer again
        assert (x["pred"], x["parse_rule"], x["unparsed"]) == (parsed.pred, parsed.rule, parsed.pred == -1)
    n = sum(x["pred"] == -1 for x in r.records)
    assert r.metrics["unparsed"]["overall"] == {"n": n, "n_items": 4, "rate": n / 4}
    assert r.parse_counts == {rule: Counter(x["parse_rule"] for x in r.records)[rule] for rule in PARSE_RULES}
    assert r.metrics["overall"]["acc"]["value"] == pytest.approx(np.mean([x["pred"] == x["label"] for x in r.records]))


def test_steered_letter_scores_equal_a_plain_forward_with_a_raw_hook(model, items):
    """Each steered record's letter log-likelihoods recomputed by hand: the record's own token ids through one plain
    forward with a bare TransformerLens hook adding 3 * v at blocks.2.hook_resid_post (every position)."""
    import torch

    torch.manual_seed(0)
    v = torch.randn(64)
    vec = SteeringVector(
        {2: v},
        VectorMetadata(
            "tiny-llama",
            64,
            processing={f: False for f in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")},
        ),
    )
    r = run_bbq(model, items[:4], scoring="letter", vector=vec, coeff=3.0, n_boot=0)
    base = run_bbq(model, items[:4], scoring="letter", n_boot=0)
    add = lambda act, hook: act + 3.0 * v.to(act.dtype)  # noqa: E731
    for rec, plain in zip(r.records, base.records):
        tokens = torch.tensor([rec["prompt_token_ids"]])
        with torch.no_grad(), model.hooks(fwd_hooks=[("blocks.2.hook_resid_post", add)]):
            logprobs = torch.log_softmax(model(tokens)[0, -1].float(), dim=-1)
        by_hand = [float(logprobs[ids[0]]) for ids in rec["option_token_ids"]]
        np.testing.assert_allclose(rec["option_logliks"], by_hand, atol=1e-4)
        norm = math.log(sum(math.exp(x) for x in by_hand))
        np.testing.assert_allclose(rec["option_scores"], [x - norm for x in by_hand], atol=1e-4)
        assert rec["prompt_token_ids"] == plain["prompt_token_ids"]
    assert not np.allclose(
        [x["option_logliks"] for x in r.records], [x["option_logliks"] for x in base.records], atol=1e-3
    )
