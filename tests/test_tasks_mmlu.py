"""Tests for lens_steer.tasks.mmlu: accuracy equals the records' own counts, generation records parse again."""

from __future__ import annotations

import numpy as np
import pytest
from _tasks_fixtures import DATA, model, needs_bbq  # noqa: F401 (model: fixture)

from lens_steer.data.mmlu import load_mmlu
from lens_steer.data.select import limit_items
from lens_steer.forward.generation import parse_answer
from lens_steer.tasks.mmlu import run_mmlu

pytestmark = needs_bbq


def test_mmlu_micro_accuracy_is_the_mean_of_correct(model):
    qs = limit_items(load_mmlu("test", subjects=["astronomy", "virology"], data_root=DATA), 12, seed=0)
    r = run_mmlu(model, qs, scoring="letter", n_boot=50)
    assert r.metrics["micro"]["value"] == pytest.approx(np.mean([x["pred"] == x["label"] for x in r.records]))
    subj = {
        s: np.mean([x["correct"] for x in r.records if x["subject"] == s]) for s in {x["subject"] for x in r.records}
    }
    assert r.metrics["macro"]["value"] == pytest.approx(np.mean(list(subj.values())))
    assert all(x["reply"] is None and x["parse_rule"] is None for x in r.records)


def test_mmlu_generate_records_carry_the_reply(model):
    qs = limit_items(load_mmlu("test", subjects=["astronomy"], data_root=DATA), 3, seed=0)
    r = run_mmlu(model, qs, scoring="generate", prompt_format="reference", n_boot=0)
    for x, q in zip(r.records, qs):
        parsed = parse_answer(x["reply"], q.choices, option_text=False)  # MMLU: letters only, as the paper parses
        assert (x["pred"], x["parse_rule"], x["correct"]) == (parsed.pred, parsed.rule, parsed.pred == q.label)
    assert r.metrics["micro"]["value"] == pytest.approx(np.mean([x["correct"] for x in r.records]))
    assert r.parse_counts is not None and sum(r.parse_counts.values()) == 3
