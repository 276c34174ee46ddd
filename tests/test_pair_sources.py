"""Tests for lens_steer.extract.pair_sources: BBQ-answer pairs come from the study's train split only, read the gold and
the stereotyped letter off each item, grow by prefix, and run through the activation cache and a search."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from _study_fixtures import needs_data, tiny  # noqa: F401 (tiny: a fixture)

from lens_steer.data.select import select
from lens_steer.errors import StudyError
from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.activations import pair_activations
from lens_steer.extract.pair_sources import BBQ_ANSWER, PairSource, available_pairs, search_pairs
from lens_steer.extract.pairs import persona_pairs
from lens_steer.methods.isv import isv_pairs, trial_params_vector
from lens_steer.methods.search.run import run_isv_search
from lens_steer.methods.search.space import SearchConfig, SearchSpace
from lens_steer.steering.vectors import load_vector

optuna.logging.set_verbosity(optuna.logging.ERROR)


@needs_data
def test_bbq_answer_pairs_are_train_items_with_gold_versus_stereotyped_letter() -> None:
    source = PairSource("religion", split_seed=0)
    ps = search_pairs(BBQ_ANSWER, 40, 0, 0, source=source)
    train = {it.example_id: it for it in select("religion", "train")}
    held_out = {(it.category, it.group_key) for split in ("validation", "test") for it in select("religion", split)}
    assert len(ps) == 40 and ps.provenance["n_pairs"] == 40
    for pair, example_id in zip(ps.pairs, ps.provenance["example_ids"]):
        item = train[example_id]  # a KeyError here would be a non-train item
        assert (item.category, item.group_key) not in held_out
        letters = "abc"
        assert pair.positive.endswith(f"Answer: ({letters[item.label]}") and pair.negative.endswith(
            f"Answer: ({letters[item.biased_index]}"
        )
        assert item.label != item.biased_index and item.context in pair.positive


@needs_data
def test_bbq_answer_sets_grow_by_prefix_cap_at_the_axis_and_follow_the_data_seed() -> None:
    source = PairSource("sexual_orientation")
    small, big = search_pairs(BBQ_ANSWER, 5, 3, 1, source=source), search_pairs(BBQ_ANSWER, 20, 0, 0, source=source)
    assert small.pairs == big.pairs[:5]  # persona and template play no part
    total = available_pairs(BBQ_ANSWER, source)
    capped = search_pairs(BBQ_ANSWER, total + 50, 0, 0, source=source)
    assert len(capped) == total and capped.provenance["n_asked"] == total + 50
    other = search_pairs(BBQ_ANSWER, 20, 0, 0, source=PairSource("sexual_orientation", data_seed=1))
    assert other.pairs != big.pairs and sorted(p.positive for p in capped.pairs) == sorted(
        p.positive
        for p in search_pairs(BBQ_ANSWER, total, 0, 0, source=PairSource("sexual_orientation", data_seed=1)).pairs
    )
    with pytest.raises(StudyError, match="PairSource"):
        search_pairs(BBQ_ANSWER, 5, 0, 0)


@needs_data
def test_persona_corpora_pass_through_unchanged() -> None:
    assert search_pairs("age", 7, 2, 1).pairs == persona_pairs("age", 7, 2, 1).pairs


@needs_data
def test_cache_serves_bbq_answer_pairs_equal_to_fresh_extraction(tiny, tmp_path: Path) -> None:
    source = PairSource("age")
    cache = ActivationCache(tiny, (1, 2), disk_dir=tmp_path / "cache", source=source)
    cache.get(BBQ_ANSWER, 4, 0, 0)
    grown = cache.get(BBQ_ANSWER, 8, 5, 2)  # another persona/template: the same pairs, four more read
    assert (cache.misses, cache.pairs_read) == (2, 8)
    fresh = pair_activations(tiny, search_pairs(BBQ_ANSWER, 8, 0, 0, source=source), (1, 2))
    for layer in (1, 2):
        assert torch.allclose(grown.positive[layer], fresh.positive[layer], atol=1e-5)
        assert torch.allclose(grown.negative[layer], fresh.negative[layer], atol=1e-5)


@needs_data
def test_search_on_bbq_answer_pairs_writes_a_vector_rebuilt_from_its_provenance(tiny, tmp_path: Path) -> None:
    space = SearchSpace(
        kinds=("additive",),
        corpora=(BBQ_ANSWER,),
        num_sents=(4, 8, 4),
        personas=(0,),
        templates=(0,),
        coeff=(-1.0, 1.0, 1.0),
        layers=((1,),),
        methods=("mean_diff",),
    )
    cfg = SearchConfig(
        space=space, n_trials=2, limit=6, chunk_size=6, scoring="letter", tpe_startup_trials=2, data_seed=3
    )
    run_isv_search(tiny, "age", cfg, tmp_path)
    saved = load_vector(tmp_path / "isv.safetensors", tiny)
    prov = saved.metadata.provenance
    assert prov["params"]["corpus"] == BBQ_ANSWER and prov["pair_source"] == PairSource("age", data_seed=3).to_json()
    pairs = isv_pairs(saved, tiny.tokenizer)
    assert (
        pairs.pairs
        == search_pairs(BBQ_ANSWER, int(prov["params"]["num_sents"]), 0, 0, source=PairSource("age", data_seed=3)).pairs
    )
    fresh = trial_params_vector(tiny, prov["params"], source=PairSource.from_json(prov["pair_source"]))
    assert torch.allclose(saved.directions[1], fresh.directions[1], atol=1e-4)
    assert json.loads((tmp_path / "study.json").read_text())["best_params"]["corpus"] == BBQ_ANSWER


@needs_data
def test_bbq_cloze_pairs_are_the_evaluators_prompt_and_answer_texts(tiny) -> None:
    from lens_steer.extract.pair_sources import BBQ_CLOZE, train_items
    from lens_steer.forward.questions import Question, cloze_prompt

    source = PairSource("age", split_seed=0)
    ps = search_pairs(BBQ_CLOZE, 30, 0, 0, tokenizer=tiny.tokenizer, source=source)
    items = {i.example_id: i for i in train_items(source, None)}
    assert len(ps) == 30 and ps.provenance["builder"] == "bbq_cloze"
    for pair, eid in zip(ps.pairs, ps.provenance["example_ids"]):
        it = items[eid]
        prompt = cloze_prompt(Question(it.context, it.question, tuple(it.answers)), "reference", tiny.tokenizer)[0]
        unbiased = it.label  # the unknown answer on an ambiguous item, the gold one on a disambiguated one
        assert it.biased_index is not None and unbiased != it.biased_index
        assert (pair.positive, pair.negative) == (prompt + it.answers[unbiased], prompt + it.answers[it.biased_index])


def contrast_ratio(model, corpus: str, axis: str, layer: int) -> float:
    """|mean of the pair differences| / mean |pair difference| at `layer`: near 0 when the differences cancel."""
    ps = search_pairs(corpus, 64, 0, 0, tokenizer=model.tokenizer, source=PairSource(axis))
    acts = pair_activations(model, ps, [layer])
    d = acts.positive[layer] - acts.negative[layer]
    return float(d.mean(0).norm() / d.norm(dim=1).mean())


@pytest.mark.integration
@needs_data
def test_the_letter_pairs_cancel_and_the_evaluator_format_pairs_do_not() -> None:
    """Why the search drops bbq_answer: with gold and stereotyped letters spread over a/b/c the letter pairs'
    differences cancel (measured 0.05-0.13 of a pair's difference on the embedded model), the evaluator-format
    pairs' do not (0.53-0.73)."""
    from lens_steer.extract.pair_sources import BBQ_CLOZE, DEFAULT_CORPORA
    from lens_steer.model.load import load_model

    model = load_model()
    for axis in ("age", "religion"):
        assert contrast_ratio(model, BBQ_ANSWER, axis, 20) < 0.2
        assert contrast_ratio(model, BBQ_CLOZE, axis, 20) > 0.4
    assert BBQ_ANSWER not in DEFAULT_CORPORA and BBQ_CLOZE in DEFAULT_CORPORA
