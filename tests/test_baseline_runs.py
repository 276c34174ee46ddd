"""Tests for lens_steer.methods.baselines.runs.BaselineScorer, the study's baselines through the prediction store: each
baseline's predictions equal those of the baseline scored directly, a stored result is read back (no rescoring, no
fine-tuning), and MMLU records are recomputed from the scores."""

from __future__ import annotations

import json

import pytest
from _tasks_fixtures import DATA, model, needs_bbq  # noqa: F401  (model: a pytest fixture)

from lens_steer.data.bbq import load_bbq
from lens_steer.data.select import limit_bbq
from lens_steer.data.splits import select_split
from lens_steer.errors import LensSteerError
from lens_steer.methods.baselines.prompting import (
    baseline_bbq_scores,
    baseline_predictions,
    finetune_examples,
    score_questions_with,
)
from lens_steer.methods.baselines.runs import BaselineScorer
from lens_steer.model.load import load_model

pytestmark = needs_bbq


def tiny():
    """A fresh copy of the fixture's model (the fine-tuning baseline trains one)."""
    return load_model("tiny-llama", seed=1)


@pytest.fixture(scope="module")
def items():
    return limit_bbq(select_split(load_bbq(["Religion"], data_root=DATA), "test"), 4, seed=3)


def _refuse_loading():
    raise AssertionError("a stored result needs no fresh model")


def test_scoring_baselines_equal_direct_scoring_and_are_read_back(model, items, tmp_path):
    scorer = BaselineScorer(model, scoring="letter", store_dir=str(tmp_path))
    for name in ("prompting", "self-debias-schick", "none"):
        got = scorer.bbq(items, name)
        direct = baseline_bbq_scores(model, items, name, scoring="letter")[2]
        assert [p.pred for p in got] == [p.pred for p in direct]
        assert [p.option_logprobs for p in got] == [pytest.approx(p.option_logprobs, abs=1e-6) for p in direct]
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "predictions").glob("*.jsonl")}
    assert len(files) == 3  # one file per baseline: the baseline's name is part of the key
    again = BaselineScorer(model, scoring="letter", store_dir=str(tmp_path))
    assert [p.pred for p in again.bbq(items, "prompting")] == [p.pred for p in scorer.bbq(items, "prompting")]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "predictions").glob("*.jsonl")} == files


def test_mmlu_records_are_the_scores_of_the_baseline(model, tmp_path):
    from lens_steer.data.mmlu import load_mmlu
    from lens_steer.data.select import limit_items
    from lens_steer.tasks.mmlu import mmlu_question

    mm = limit_items(load_mmlu("test", data_root=DATA), 3, seed=0)
    scorer = BaselineScorer(model, store_dir=str(tmp_path))
    rows = scorer.mmlu(mm, "prompting", "lm_eval")
    scores = score_questions_with(model, [mmlu_question(i) for i in mm], "prompting", prompt_format="lm_eval")
    assert [r["pred"] for r in rows] == [s.pred for s in scores]
    assert [r["correct"] for r in rows] == [s.pred == i.label for s, i in zip(scores, mm)]
    with pytest.raises(LensSteerError, match="baseline on MMLU"):
        scorer.mmlu(mm, "self-debias", "lm_eval")


def test_finetune_is_keyed_by_its_adapter_and_read_back_without_training(model, items, tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_STEER_CACHE", str(tmp_path / "cache"))
    texts = finetune_examples(
        limit_bbq(select_split(load_bbq(["Religion"], data_root=DATA), "train"), 12, seed=0), model.tokenizer
    )
    scorer = BaselineScorer(model, store_dir=str(tmp_path / "run"), load_base=tiny, train_texts=texts)
    got = scorer.bbq(items, "finetune")
    direct = baseline_predictions(
        model, items, "finetune", load_base=tiny, train_texts=texts, seed=0
    )  # the adapter read from its cache
    assert [p.pred for p in got] == [p.pred for p in direct]
    assert [p.option_logprobs for p in got] == [pytest.approx(p.option_logprobs, abs=1e-5) for p in direct]
    index = json.loads((tmp_path / "run" / "predictions" / "index.json").read_text())
    assert [e["baseline"] for e in index.values()] == ["finetune"] and len(
        next(iter(index.values()))["finetune_key"]
    ) == 20
    stored = BaselineScorer(model, store_dir=str(tmp_path / "run"), load_base=_refuse_loading, train_texts=texts)
    assert [p.pred for p in stored.bbq(items, "finetune")] == [p.pred for p in got]
    other_seed = BaselineScorer(
        model, store_dir=str(tmp_path / "run"), load_base=_refuse_loading, train_texts=texts, finetune_seed=1
    )
    with pytest.raises(
        AssertionError, match="needs no fresh model"
    ):  # another seed is another adapter: not in the store
        other_seed.bbq(items, "finetune")


def test_paper_self_debias_predictions_are_the_self_checks(model, items, tmp_path):
    from lens_steer.methods.baselines.selfcheck import self_check_answers
    from lens_steer.tasks.bbq import bbq_question

    scorer = BaselineScorer(model, store_dir=str(tmp_path))
    got = scorer.bbq(items[:2], "self-debias")
    assert [p.pred for p in got] == [a.pred for a in self_check_answers(model, [bbq_question(i) for i in items[:2]])]
    assert all(p.option_logprobs == () for p in got)  # a generation protocol: no option scores, so no per-item margins
