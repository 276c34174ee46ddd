"""Scoring multiple-choice items with one forward pass each: logits only where scored, length-bucketed batches.

Protocols: `letter` (compare the option letters' logits at the answer position), `letter-calibrated`
(minus each letter's mean preference over the evaluated items), `letter-permuted` (average over the
cyclic orders of the options) and `cloze` (summed log-likelihood of each option's text, lm-eval style;
per-token means are kept beside). Prompt formats: `reference` (the SVE paper's chat prompt) and `lm_eval`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import ResidualReuse, Row, Unembed, forward_batch, residual_reuse_for, run_rows
from lens_steer.forward.generation import generate_answers
from lens_steer.forward.questions import (
    DEFAULT_SCORING,
    PROMPT_FORMATS,
    SCORINGS,
    Question,
    QuestionScore,
    answer_view,
    check_choice,
    cloze_prompt,
    encode_pair,
    first_token,
    letter_prompt,
    log_softmax,
)
from lens_steer.forward.residual_cache import (
    ResidualCache,
    batch_key,
)
from lens_steer.forward.shared_prefix import run_shared_prefix
from lens_steer.model.architectures import hf_config, sliding_window
from lens_steer.model.load import HookedModel, accepts_kv_cache
from lens_steer.model.tokens import encode_texts, length_batches, pad_batch, pad_id, starts_with_bos
from lens_steer.progress import Progress
from lens_steer.steering.hooks import steer
from lens_steer.steering.interventions import Intervention, intervention_of
from lens_steer.steering.vectors import SteeringVector


def score_questions(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    max_batch: int = 16,
    max_tokens: int = 3072,
    progress: Progress | None = None,
    reuse: ResidualReuse | None = None,
    prefix_tree: bool = True,
) -> list[QuestionScore]:
    """Score every question with `scoring` under `prompt_format`; progress counts questions.

    With `reuse` (see `residual_reuse_for`), batches whose residual entering block `reuse.start` is cached
    run only the blocks from there; the others run in full and are cached. With `prefix_tree` (models taking a
    KV cache), each distinct token prefix of the items' sequences runs once (`lens_steer.forward.prefix_tree`); False
    keeps the earlier path (length buckets; cloze: each prompt once, its KV cache shared by its options)."""
    check_choice(scoring, SCORINGS, "scoring")
    check_choice(prompt_format, PROMPT_FORMATS, "prompt format")
    if not questions:
        raise LensSteerError("no items to score; the selection is empty")
    tok = model.tokenizer
    if scoring == "generate":
        return _score_generated(model, questions, prompt_format, max_batch, progress)
    if scoring == "cloze":
        return _score_cloze(model, questions, prompt_format, max_batch, max_tokens, progress, reuse, prefix_tree)
    prompts: list[list[str]] = []
    prompt_ids: list[list[int]] = []
    rows: list[Row] = []
    for q in questions:
        k = len(q.options)
        orders = (
            [list(range(k))] if scoring != "letter-permuted" else [[(j + s) % k for j in range(k)] for s in range(k)]
        )
        texts = []
        for order in orders:
            text, letters = letter_prompt(q, order, prompt_format, tok)
            ids = encode_texts(model, [text])[0]
            rows.append(Row(ids, [len(ids) - 1], candidates=[first_token(model, letter) for letter in letters]))
            texts.append(text)
            if len(texts) == 1:
                prompt_ids.append(ids)
        prompts.append(texts)
    unit = len(questions) / len(rows)
    raw = run_rows(
        model,
        rows,
        max_batch=max_batch,
        max_tokens=max_tokens,
        progress=progress,
        progress_unit=unit,
        reuse=reuse,
        tree=prefix_tree,
    )
    scores: list[QuestionScore] = []
    r = 0
    per_question: list[np.ndarray] = []
    logliks: list[np.ndarray] = []
    for q in questions:
        k = len(q.options)
        if scoring == "letter-permuted":
            per_question.append(permutation_average(raw[r : r + k]))
            logliks.append(np.mean([[raw[r + s][(o - s) % k] for o in range(k)] for s in range(k)], axis=0))
            r += k
        else:
            per_question.append(log_softmax(raw[r]))
            logliks.append(np.asarray(raw[r], dtype=float))
            r += 1
    if scoring == "letter-calibrated":
        prior = _letter_prior(per_question)
        per_question = [log_softmax(lp - prior[: len(lp)]) for lp in per_question]
    r = 0
    for q, texts, lp, ll, ids0 in zip(questions, prompts, per_question, logliks, prompt_ids):
        ids = [[int(t)] for t in rows[r].candidates or []]  # per option, its letter's token (in the first order shown)
        r += len(texts)
        pred, per_answer, best = answer_view(q, lp)
        scores.append(
            QuestionScore(
                "\n\n".join(texts),
                ids,
                lp.tolist(),
                pred,
                prompt_token_ids=ids0,
                option_logliks=[float(x) for x in ll],
                option_token_counts=[1] * len(lp),
                answer_scores=per_answer,
                pred_option=best,
                bos=starts_with_bos(model, ids0),
            )
        )
    return scores


def _score_generated(
    model: HookedModel, questions: Sequence[Question], prompt_format: str, max_batch: int, progress: Progress | None
) -> list[QuestionScore]:
    """The SVE paper's protocol (lens_steer.forward.generation): greedy replies to its letter prompt, parsed as its code parses them."""
    if prompt_format != "reference":
        raise LensSteerError("--scoring generate is the SVE paper's protocol; use it with --prompt-format reference")
    prompts = [letter_prompt(q, range(len(q.options)), "reference", model.tokenizer)[0] for q in questions]
    answers = generate_answers(
        model,
        prompts,
        [q.options for q in questions],
        option_text=[q.subject is None for q in questions],
        max_batch=max_batch,
        progress=progress,
    )
    return [
        QuestionScore(
            a.prompt,
            [a.reply_token_ids],
            [],
            a.pred,
            reply=a.reply,
            parse_rule=a.rule,
            prompt_token_ids=a.prompt_token_ids,
            pred_option=a.pred,
            bos=starts_with_bos(model, a.prompt_token_ids),
        )
        for a in answers
    ]


def permutation_average(letter_logits: Sequence[np.ndarray]) -> np.ndarray:
    """Option log-probs averaged over cyclic orders: order s shows option (j + s) % k at letter j."""
    k = len(letter_logits)
    acc = np.zeros(k)
    for s, logits in enumerate(letter_logits):
        lp = log_softmax(np.asarray(logits, dtype=float))
        for j in range(k):
            acc[(j + s) % k] += lp[j] / k
    return log_softmax(acc)


def _letter_prior(per_question: Sequence[np.ndarray]) -> np.ndarray:
    """Mean log-probability of each letter position over the questions (the model's letter preference)."""
    width = max(len(lp) for lp in per_question)
    sums, counts = np.zeros(width), np.zeros(width)
    for lp in per_question:
        sums[: len(lp)] += lp
        counts[: len(lp)] += 1
    return sums / np.maximum(counts, 1)


def _score_cloze(
    model: HookedModel,
    questions: Sequence[Question],
    prompt_format: str,
    max_batch: int,
    max_tokens: int,
    progress: Progress | None,
    reuse: ResidualReuse | None,
    tree: bool = True,
) -> list[QuestionScore]:
    prompts: list[str] = []
    prompt_ids: list[list[int]] = []
    cont_ids: list[list[list[int]]] = []
    for q in questions:
        text, conts = cloze_prompt(q, prompt_format, model.tokenizer)
        pairs = [encode_pair(model, text, c, move_trailing_whitespace=prompt_format == "lm_eval") for c in conts]
        opts = [o for _, o in pairs]
        if any(not o for o in opts):
            raise LensSteerError(f"an option of question {q.question[:60]!r} encodes to no tokens")
        prompts.append(text)
        prompt_ids.append(pairs[0][0])
        cont_ids.append(opts)
    if accepts_kv_cache(model) and not tree:
        raw = _cloze_shared_prefix(
            model, prompt_ids, cont_ids, max_batch=max_batch, max_tokens=max_tokens, progress=progress, reuse=reuse
        )
    else:  # one sequence per option: over a prefix tree, or (TL 3.x HookedTransformer takes no Hugging Face cache) each in full
        rows = [
            Row(p + o, list(range(len(p) - 1, len(p) - 1 + len(o))), targets=o)
            for p, opts in zip(prompt_ids, cont_ids)
            for o in opts
        ]
        flat = run_rows(
            model,
            rows,
            max_batch=max_batch,
            max_tokens=max_tokens,
            progress=progress,
            progress_unit=len(questions) / len(rows),
            reuse=reuse,
            tree=tree,
        )
        raw, r = [], 0
        for opts in cont_ids:
            raw.append(flat[r : r + len(opts)])
            r += len(opts)
    scores = []
    for q, text, ids0, opts, lps in zip(questions, prompts, prompt_ids, cont_ids, raw):
        summed = np.array([float(x.sum()) for x in lps])
        per_tok = np.array([float(x.mean()) for x in lps])
        normalised = log_softmax(summed)
        pred, _, best = answer_view(q, summed)
        scores.append(
            QuestionScore(
                text,
                opts,
                normalised.tolist(),
                pred,
                log_softmax(per_tok).tolist(),
                prompt_token_ids=ids0,
                option_logliks=summed.tolist(),
                option_token_counts=[len(o) for o in opts],
                answer_scores=answer_view(q, normalised)[1],
                pred_option=best,
                bos=starts_with_bos(model, ids0),
            )
        )
    return scores


def _cloze_shared_prefix(
    model: HookedModel,
    prompt_ids: list[list[int]],
    cont_ids: list[list[list[int]]],
    *,
    max_batch: int,
    max_tokens: int,
    progress: Progress | None,
    reuse: ResidualReuse | None = None,
) -> list[list[np.ndarray]]:
    """Per question, per option: log-probs of the option's tokens. The prompt runs once; its KV cache serves every
    option (`shared_prefix`)."""
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    unembed = Unembed(model)
    out: list[list[np.ndarray]] = [[] for _ in prompt_ids]
    side = (
        "left" if sliding_window(hf_config(model)) is not None else "right"
    )  # a sliding window would count the pads between prompt and option
    for batch_idx in length_batches([len(p) for p in prompt_ids], max_batch=max_batch, max_tokens=max_tokens):
        prompts = pad_batch([prompt_ids[i] for i in batch_idx], pad_id=pad_id(model), padding_side=side, device=device)
        k = [len(cont_ids[i]) for i in batch_idx]
        options = [o for i in batch_idx for o in cont_ids[i]]
        conts = pad_batch(options, pad_id=pad_id(model), padding_side="right", device=device)
        owner = torch.tensor([j for j, n in enumerate(k) for _ in range(n)], device=device)
        with torch.inference_mode():
            keys, stored = ["", ""], [None, None]
            if reuse is not None:
                keys = [batch_key(prompts.tokens), batch_key(prompts.tokens, conts.tokens, owner)]
                stored = [reuse.cache.get(k, reuse.start) for k in keys]
                if any(
                    x is None for x in stored
                ):  # both passes reuse or both run in full: the KV cache must cover the same blocks
                    stored = [None, None]
            resid_prompt, shared = run_shared_prefix(
                lambda cache: forward_batch(
                    model,
                    prompts.tokens,
                    {"past_key_values": cache, **prompts.forward_kwargs()},
                    reuse,
                    keys[0],
                    stored[0],
                ),
                prompts.attention_mask,
            )
            last_prompt = resid_prompt[
                torch.arange(len(batch_idx), device=device), prompts.last_index
            ]  # predicts each option's first token
            resid_cont = forward_batch(
                model, conts.tokens, shared.row_kwargs(owner, conts.attention_mask), reuse, keys[1], stored[1]
            )
            rows, pos = [], []
            for r, o in enumerate(options):
                rows += [r] * (len(o) - 1)
                pos += list(range(len(o) - 1))
            sel = torch.cat([last_prompt[owner], resid_cont[rows, pos]]) if rows else last_prompt[owner]
            logp = torch.log_softmax(unembed.logits(sel), dim=-1)
            first = logp[: len(options)]
            rest = logp[len(options) :]
            picked_first = (
                first[torch.arange(len(options), device=device), torch.tensor([o[0] for o in options], device=device)]
                .cpu()
                .numpy()
            )
            rest_targets = [t for o in options for t in o[1:]]
            picked_rest = (
                rest[
                    torch.arange(len(rest_targets), device=device),
                    torch.tensor(rest_targets, dtype=torch.long, device=device),
                ]
                .cpu()
                .numpy()
                if rest_targets
                else np.empty(0)
            )
        r_off = 0
        for r, o in enumerate(options):
            vals = np.concatenate([[picked_first[r]], picked_rest[r_off : r_off + len(o) - 1]])
            r_off += len(o) - 1
            out[batch_idx[int(owner[r])]].append(vals)
        if progress is not None:
            progress(len(batch_idx))
    return out


@contextmanager
def maybe_steer(
    model: HookedModel,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    *,
    intervention: Intervention | None = None,
) -> Iterator[None]:
    """Apply `intervention` (or `coeff * vector`) inside the block, or do nothing without one or at coeff 0."""
    active = intervention_of(vector, coeff, intervention)
    with steer(model, active) if active is not None else nullcontext():
        yield


def score_steered(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    intervention: Intervention | None = None,
    residual_cache: ResidualCache | None = None,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix_tree: bool = True,
) -> list[QuestionScore]:
    """`score_questions` under `intervention` (or `coeff * vector`); with `residual_cache`, the residual entering
    the first edited block is reused across calls on the same questions."""
    active = intervention_of(vector, coeff, intervention)
    reuse = residual_reuse_for(model, residual_cache, active)
    with maybe_steer(model, intervention=active):
        return score_questions(
            model,
            questions,
            scoring=scoring,
            prompt_format=prompt_format,
            max_batch=max_batch,
            progress=progress,
            reuse=reuse,
            prefix_tree=prefix_tree,
        )


def sequence_logprobs(
    model: HookedModel,
    texts: Sequence[str],
    *,
    max_batch: int = 16,
    max_tokens: int = 3072,
    progress: Progress | None = None,
) -> list[float]:
    """Summed log-probability of each text's tokens after the first (CrowS-Pairs)."""
    rows = []
    for ids in encode_texts(model, texts):
        if len(ids) < 2:
            raise LensSteerError("a text needs at least two tokens to be scored")
        rows.append(Row(ids, list(range(len(ids) - 1)), targets=ids[1:]))
    raw = run_rows(model, rows, max_batch=max_batch, max_tokens=max_tokens, progress=progress, progress_unit=1.0)
    return [float(x.sum()) for x in raw]
