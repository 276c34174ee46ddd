"""Scoring protocols checked against direct full forward passes on the tiny model, and by the math."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_models import single_thread  # noqa: F401 (autouse fixture: one torch thread)

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import RunPlan
from lens_steer.forward.prefix_tree import DEFAULT_ROW_TOKENS
from lens_steer.forward.questions import Question, cloze_prompt, letter_prompt
from lens_steer.forward.scoring import permutation_average, score_questions, sequence_logprobs
from lens_steer.model.load import load_model
from lens_steer.model.tokens import encode_texts

QUESTIONS = [
    Question("Two friends met.", "Who was late?", ("The first", "The second", "Unknown")),
    Question(
        "A long context about a cat and a dog playing in the yard all day.", "Who won?", ("cat", "dog", "Can't tell")
    ),
    Question("", "What is two plus two?", ("3", "4", "5", "22"), subject="elementary_mathematics"),
]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama", seed=3)


@pytest.fixture(scope="module")
def embedded():
    from lens_steer.model.load import ModelError, embedded_smollm2_folder

    try:
        embedded_smollm2_folder()
    except ModelError as e:
        pytest.skip(f"missing weights: embedded SmolLM2 not installed: {e}")
    return load_model()


def full_logits(model, text: str) -> torch.Tensor:
    ids = torch.tensor([encode_texts(model, [text])[0]])
    with torch.inference_mode():
        return model(ids)[0].float()


def log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


@pytest.mark.parametrize("fmt", ["reference", "lm_eval"])
def test_letter_scores_equal_full_forward_logits(model, fmt):
    qs = QUESTIONS[:2] if fmt == "reference" else QUESTIONS
    scores = score_questions(model, qs, scoring="letter", prompt_format=fmt, plan=RunPlan(max_batch=2))
    for q, s in zip(qs, scores):
        text, letters = letter_prompt(q, range(len(q.options)), fmt, model.tokenizer)
        assert s.prompt == text
        ids = [model.tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in letters]
        logits = full_logits(model, text)[-1, ids].numpy()
        np.testing.assert_allclose(s.option_scores, log_softmax(logits), atol=1e-4)
        assert s.pred == int(np.argmax(logits))
        assert s.option_token_ids == [[i] for i in ids]


def test_cloze_scores_equal_summed_logprobs_from_full_forward(model):
    scores = score_questions(model, QUESTIONS, scoring="cloze", prompt_format="lm_eval", plan=RunPlan(max_batch=4))
    for q, s in zip(QUESTIONS, scores):
        prompt, conts = cloze_prompt(q, "lm_eval", model.tokenizer)
        n = len(encode_texts(model, [prompt])[0])
        sums, means = [], []
        for c in conts:
            c_ids = model.tokenizer(c, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(_logits_of_ids(model, encode_texts(model, [prompt])[0] + c_ids), -1)
            per = [float(logp[n - 1 + i, t]) for i, t in enumerate(c_ids)]
            sums.append(sum(per))
            means.append(sum(per) / len(per))
        np.testing.assert_allclose(s.option_scores, log_softmax(sums), atol=1e-4)
        np.testing.assert_allclose(s.option_scores_per_token, log_softmax(means), atol=1e-4)
        assert s.pred == int(np.argmax(sums))


def _logits_of_ids(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0].float()


def test_batching_does_not_change_scores(model):
    one = [score_questions(model, [q], scoring="cloze")[0].option_scores for q in QUESTIONS[:2]]
    many = [s.option_scores for s in score_questions(model, QUESTIONS[:2], scoring="cloze", plan=RunPlan(max_batch=8))]
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_permutation_average_removes_a_pure_position_preference():
    # a "model" that prefers letter positions (3, 1, 0) whatever the options are
    raw = [np.array([3.0, 1.0, 0.0])] * 3
    np.testing.assert_allclose(permutation_average(raw), np.log([1 / 3] * 3), atol=1e-12)


def test_permutation_average_maps_positions_back_to_options():
    # content preference only: option 2 gets logit 5 wherever it is shown
    k = 3
    raw = []
    for s in range(k):
        shown = [(j + s) % k for j in range(k)]
        raw.append(np.array([5.0 if o == 2 else 0.0 for o in shown]))
    lp = permutation_average(raw)
    assert int(np.argmax(lp)) == 2
    np.testing.assert_allclose(lp, log_softmax([0.0, 0.0, 5.0]), atol=1e-12)


def test_letter_permuted_scores_each_cyclic_order(model):
    q = QUESTIONS[0]
    s = score_questions(model, [q], scoring="letter-permuted", prompt_format="lm_eval")[0]
    raw = []
    for shift in range(3):
        order = [(j + shift) % 3 for j in range(3)]
        text, letters = letter_prompt(q, order, "lm_eval", model.tokenizer)
        ids = [model.tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in letters]
        raw.append(full_logits(model, text)[-1, ids].numpy())
    np.testing.assert_allclose(s.option_scores, permutation_average(raw), atol=1e-4)
    assert len(s.option_token_ids) == 3


def test_letter_calibrated_subtracts_the_mean_letter_preference(model):
    qs = QUESTIONS[:2]
    plain = np.array([s.option_scores for s in score_questions(model, qs, scoring="letter")])
    cal = np.array([s.option_scores for s in score_questions(model, qs, scoring="letter-calibrated")])
    expected = np.array([log_softmax(row - plain.mean(0)) for row in plain])
    np.testing.assert_allclose(cal, expected, atol=1e-6)


def test_sequence_logprobs_equal_full_forward(model):
    texts = ["The cat sat.", "A much longer sentence about dogs."]
    got = sequence_logprobs(model, texts)
    for text, value in zip(texts, got):
        ids = encode_texts(model, [text])[0]
        logp = torch.log_softmax(_logits_of_ids(model, ids), -1)
        assert value == pytest.approx(sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)), abs=1e-4)


def test_bad_input_errors(model):
    with pytest.raises(LensSteerError, match="unknown scoring 'logit'"):
        score_questions(model, QUESTIONS, scoring="logit")
    with pytest.raises(LensSteerError, match="unknown prompt format"):
        score_questions(model, QUESTIONS, prompt_format="helm")
    with pytest.raises(LensSteerError, match="empty"):
        score_questions(model, [])


def test_steered_cloze_with_shared_prefix_equals_steered_full_forward(model):
    from lens_steer.model.load import PROCESSING_FLAGS
    from lens_steer.steering.hooks import steer
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    torch.manual_seed(5)
    vec = SteeringVector(
        {1: torch.randn(64)}, VectorMetadata("tiny-llama", 64, processing={f: False for f in PROCESSING_FLAGS})
    )
    q = QUESTIONS[1]
    with steer(model, [(vec, 2.0)]):
        s = score_questions(model, [q], scoring="cloze", prompt_format="lm_eval")[0]
        prompt, conts = cloze_prompt(q, "lm_eval", model.tokenizer)
        p_ids = encode_texts(model, [prompt])[0]
        sums = []
        for c in conts:
            c_ids = model.tokenizer(c, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(_logits_of_ids(model, p_ids + c_ids), -1)
            sums.append(sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(c_ids)))
    np.testing.assert_allclose(s.option_scores, log_softmax(sums), atol=1e-4)


# ---- evaluation parity (BOS, raw log-likelihoods, answer mapping) ------------------------------
@pytest.mark.parametrize("prompt_format", ["reference", "lm_eval"])
@pytest.mark.parametrize("scoring", ["cloze", "letter", "letter-calibrated", "letter-permuted"])
def test_prompt_ids_are_the_tokenizers_default_encoding(model, scoring: str, prompt_format: str) -> None:
    """The ids scored are what a freshly loaded tokenizer gives the rendered prompt by default (its BOS rule
    included)."""
    from lens_steer.model.load import tiny_tokenizer

    fresh = tiny_tokenizer()
    for q, s in zip(QUESTIONS, score_questions(model, QUESTIONS, scoring=scoring, prompt_format=prompt_format)):
        text = (
            cloze_prompt(q, prompt_format, fresh)[0]
            if scoring == "cloze"
            else letter_prompt(q, range(len(q.options)), prompt_format, fresh)[0]
        )
        expected = fresh(text)["input_ids"]
        if prompt_format == "reference":  # the chat template already starts with the BOS string: no second BOS
            expected = fresh(text, add_special_tokens=False)["input_ids"]
        assert s.prompt_token_ids == expected
        assert s.bos == (expected[0] == fresh.bos_token_id)


def test_cloze_raw_logliks_equal_a_full_forward(model) -> None:
    for fmt in ("reference", "lm_eval"):
        for q, s in zip(QUESTIONS, score_questions(model, QUESTIONS, scoring="cloze", prompt_format=fmt)):
            for opt, ll, n, cont in zip(q.options, s.option_logliks, s.option_token_counts, s.option_token_ids):
                ids = torch.tensor([s.prompt_token_ids + cont])
                with torch.inference_mode():
                    lp = torch.log_softmax(model(ids)[0].float(), dim=-1)
                p = len(s.prompt_token_ids)
                assert n == len(cont) > 0
                assert ll == pytest.approx(sum(float(lp[p - 1 + i, t]) for i, t in enumerate(cont)), abs=1e-4)
            assert s.option_scores == pytest.approx(log_softmax(s.option_logliks).tolist(), abs=1e-6)


def test_letter_raw_logliks_are_full_vocabulary_log_probs(model) -> None:
    for q, s in zip(QUESTIONS, score_questions(model, QUESTIONS, scoring="letter", prompt_format="lm_eval")):
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([s.prompt_token_ids]))[0, -1].float(), dim=-1)
        assert s.option_logliks == pytest.approx([float(lp[t[0]]) for t in s.option_token_ids], abs=1e-4)
        assert s.option_token_counts == [1] * len(q.options)


def test_several_phrasings_of_one_answer_count_as_that_answer(model) -> None:
    """answer_of maps options to answers: the argmax option's answer is the prediction, each answer scores its best
    option."""
    q = Question(
        "Two friends met.",
        "Who was late?",
        ("The first", "The second", "Unknown", "Not known", "Cannot answer"),
        answer_of=(0, 1, 2, 2, 2),
    )
    (s,) = score_questions(model, [q], scoring="cloze", prompt_format="lm_eval")
    best = int(np.argmax(s.option_logliks))
    assert s.pred_option == best and s.pred == q.answer_of[best]
    for a in range(3):
        assert s.answer_scores[a] == pytest.approx(
            max(sc for sc, owner in zip(s.option_scores, q.answer_of) if owner == a)
        )


def test_mmlu_lm_eval_format_lists_choices_and_scores_letters() -> None:
    q = QUESTIONS[2]
    text, conts = cloze_prompt(q, "lm_eval", None)
    assert text == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is two plus two?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    )
    assert conts == [" A", " B", " C", " D"]


# ---- the prefix tree (lens_steer.forward.prefix_tree) against one full forward per item ------------------
CTX = "An old man and a young woman waited at the bus stop for a long time."
DIS = "The old man had forgotten his glasses."
BBQ_LIKE = [  # a template fill's four variants share their context; a fifth item shares only the chat prompt
    Question(CTX, "Who could not read the timetable?", ("The old man", "The young woman", "Cannot be determined")),
    Question(CTX, "Who could read the timetable?", ("The old man", "The young woman", "Cannot be determined")),
    Question(
        f"{CTX} {DIS}", "Who could not read the timetable?", ("The old man", "The young woman", "Cannot be determined")
    ),
    Question(
        f"{CTX} {DIS}", "Who could read the timetable?", ("The old man", "The young woman", "Cannot be determined")
    ),
    Question("Two cooks argued in a kitchen.", "Who was right?", ("The first cook", "The second cook", "Unknown")),
]


def random_vector(model, seed: int = 5):
    from lens_steer.model.load import PROCESSING_FLAGS, model_identity
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    ident = model_identity(model)
    g = torch.Generator().manual_seed(seed)
    layer = int(model.cfg.n_layers) // 2
    return SteeringVector(
        {layer: torch.randn(ident.d_model, generator=g) * 3},
        VectorMetadata(ident.name, ident.d_model, processing={f: False for f in PROCESSING_FLAGS}),
    )


def full_forward_logliks(model, questions, scoring: str, fmt: str) -> list[np.ndarray]:
    """Per question, raw option log-likelihoods from one full forward per sequence (cloze: per option; letter: per
    order)."""
    from lens_steer.forward.questions import encode_pair, first_token

    out = []
    for q in questions:
        k = len(q.options)
        if scoring == "cloze":
            text, conts = cloze_prompt(q, fmt, model.tokenizer)
            sums = []
            for c in conts:
                p, o = encode_pair(model, text, c, move_trailing_whitespace=fmt == "lm_eval")
                logp = torch.log_softmax(_logits_of_ids(model, p + o), -1)
                sums.append(sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(o)))
            out.append(np.array(sums))
            continue
        orders = (
            [list(range(k))] if scoring != "letter-permuted" else [[(j + s) % k for j in range(k)] for s in range(k)]
        )
        raw = []
        for order in orders:
            text, letters = letter_prompt(q, order, fmt, model.tokenizer)
            logp = torch.log_softmax(_logits_of_ids(model, encode_texts(model, [text])[0])[-1], -1)
            raw.append(np.array([float(logp[first_token(model, x)]) for x in letters]))
        out.append(
            np.mean([[raw[s][(o - s) % k] for o in range(k)] for s in range(k)], axis=0)
            if scoring == "letter-permuted"
            else raw[0]
        )
    return out


def expected_scores(raw: list[np.ndarray], scoring: str) -> list[np.ndarray]:
    """Normalised option scores from raw log-likelihoods, as each protocol defines them (permuted: checked by its
    log-likelihoods)."""
    per = [log_softmax(r) for r in raw]
    if scoring == "letter-calibrated":
        prior = np.mean(per, axis=0)
        per = [log_softmax(p - prior) for p in per]
    return per


def check_against_full_forwards(model, questions, scoring: str, fmt: str, steered: bool, plan: RunPlan) -> None:
    from lens_steer.forward.scoring import maybe_steer

    vec = random_vector(model)
    with maybe_steer(model, vec if steered else None, 1.0):
        scores = score_questions(model, questions, scoring=scoring, prompt_format=fmt, plan=plan)
        raw = full_forward_logliks(model, questions, scoring, fmt)
    for s, r, e in zip(scores, raw, expected_scores(raw, scoring)):
        np.testing.assert_allclose(s.option_logliks, r, atol=1e-4, rtol=1e-4)
        if scoring != "letter-permuted":
            np.testing.assert_allclose(s.option_scores, e, atol=1e-4, rtol=1e-4)
            assert s.pred == int(np.argmax(e))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
@pytest.mark.parametrize("scoring", ["cloze", "letter", "letter-calibrated", "letter-permuted"])
def test_prefix_tree_scores_equal_one_full_forward_per_item(
    model, scoring: str, steered: bool, padding_side: str
) -> None:
    plan = RunPlan(max_batch=3, tree_padding_side=padding_side)
    check_against_full_forwards(model, BBQ_LIKE, scoring, "reference", steered, plan)
    if scoring == "cloze" and steered:
        check_against_full_forwards(model, BBQ_LIKE, scoring, "lm_eval", steered, plan)


@pytest.mark.parametrize("row_tokens", [0, 40, DEFAULT_ROW_TOKENS], ids=["a-segment-per-row", "mixed", "packed"])
def test_the_row_budget_reaches_the_tree_and_changes_the_layout_not_the_scores(model, row_tokens: int) -> None:
    from lens_steer.forward.engine import plan_tree

    plan = RunPlan(max_batch=3, row_tokens=row_tokens)
    check_against_full_forwards(model, BBQ_LIKE, "cloze", "reference", True, plan)
    shapes: list[tuple[int, int]] = []

    def record(tensor: torch.Tensor, *, hook) -> None:
        shapes.append((int(tensor.shape[0]), int(tensor.shape[1])))

    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", record)]):
        scores = score_questions(model, BBQ_LIKE, scoring="cloze", plan=plan)
    layout = plan_tree(model, [s.prompt_token_ids + o for s in scores for o in s.option_token_ids], plan)
    assert shapes == [(len(b.rows), max(layout.rows[b.chunk][r].width for r in b.rows)) for b in layout.batches]
    assert any(len(r.segments) > 1 for chunk in layout.rows for r in chunk) == (row_tokens > 0)


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_prefix_tree_and_the_length_buckets_agree(model, scoring: str) -> None:
    tree = score_questions(model, BBQ_LIKE, scoring=scoring, plan=RunPlan(max_batch=2))
    plain = score_questions(model, BBQ_LIKE, scoring=scoring, plan=RunPlan(max_batch=2, prefix_tree=False))
    for a, b in zip(tree, plain):
        np.testing.assert_allclose(a.option_logliks, b.option_logliks, atol=1e-4, rtol=1e-4)
        assert (
            a.pred == b.pred and a.prompt_token_ids == b.prompt_token_ids and a.option_token_ids == b.option_token_ids
        )


@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
def test_cloze_equals_the_shared_prefix_oracle(model, steered: bool) -> None:
    """Each prompt run once, its KV cache extended by each option (tests/_shared_prefix_cloze.py), gives the option
    log-probs the prefix tree and the length buckets give, token by token."""
    from _shared_prefix_cloze import shared_prefix_cloze

    from lens_steer.forward.scoring import maybe_steer

    with maybe_steer(model, random_vector(model) if steered else None, 1.0):
        for plan in (RunPlan(max_batch=2), RunPlan(max_batch=2, prefix_tree=False)):
            scores = score_questions(model, BBQ_LIKE, scoring="cloze", plan=plan)
            oracle = shared_prefix_cloze(
                model, [s.prompt_token_ids for s in scores], [s.option_token_ids for s in scores], max_batch=2
            )
            for s, per_option in zip(scores, oracle):
                np.testing.assert_allclose(s.option_logliks, [x.sum() for x in per_option], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_prefix_tree_reuses_the_stored_residual_below_the_steered_block(model, scoring: str) -> None:
    """With a residual cache the second steered call runs the tree from the first steered block only, and still
    equals a steered full forward per item."""
    from lens_steer.forward.residual_cache import ResidualCache
    from lens_steer.forward.scoring import maybe_steer, score_steered

    vec = random_vector(model)
    layer = int(model.cfg.n_layers) // 2
    cache = ResidualCache([layer])
    first = score_steered(model, BBQ_LIKE, vector=vec, coeff=1.0, residual_cache=cache, scoring=scoring, max_batch=3)
    hits = cache.hits
    second = score_steered(model, BBQ_LIKE, vector=vec, coeff=1.0, residual_cache=cache, scoring=scoring, max_batch=3)
    assert cache.hits > hits and cache.nbytes > 0
    with maybe_steer(model, vec, 1.0):
        raw = full_forward_logliks(model, BBQ_LIKE, scoring, "reference")
    for a, b, r in zip(first, second, raw):
        np.testing.assert_allclose(a.option_logliks, r, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(b.option_logliks, r, atol=1e-4, rtol=1e-4)
        assert a.pred == b.pred == int(np.argmax(r))


@pytest.mark.integration
@pytest.mark.parametrize(
    ("scoring", "steered", "padding_side"),
    [("cloze", False, "right"), ("cloze", True, "left"), ("letter", True, "right"), ("letter-permuted", False, "left")],
)
def test_prefix_tree_on_the_embedded_model_equals_one_full_forward_per_item(
    embedded, scoring: str, steered: bool, padding_side: str
) -> None:
    questions = BBQ_LIKE[:4] if scoring != "letter-permuted" else BBQ_LIKE[:2]
    plan = RunPlan(max_batch=3, tree_padding_side=padding_side)
    check_against_full_forwards(embedded, questions, scoring, "reference", steered, plan)
