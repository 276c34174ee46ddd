"""Scoring multiple-choice items with one forward pass each: logits only where scored, length-bucketed batches.

Protocols: `letter` (compare the option letters' logits at the answer position), `letter-calibrated`
(minus each letter's mean preference over the evaluated items), `letter-permuted` (average over the
cyclic orders of the options) and `cloze` (summed log-likelihood of each option's text, lm-eval style;
per-token means are kept beside). Prompt formats: `reference` (the SVE paper's chat prompt) and `lm_eval`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lens_steer.architectures import final_logit_softcap, hf_config, sliding_window
from lens_steer.errors import LensSteerError
from lens_steer.generation import generate_answers
from lens_steer.models import HookedModel, accepts_kv_cache
from lens_steer.pairs import render_chat
from lens_steer.prefix_tree import DEFAULT_ROW_TOKENS, TreePlan, kv_bytes_per_token, run_tree
from lens_steer.residual_cache import ResidualCache, batch_key, can_run_blocks, capture_hooks, run_blocks, start_block
from lens_steer.shared_prefix import run_shared_prefix
from lens_steer.steering import steer
from lens_steer.tokens import encode_texts, length_batches, pad_batch, pad_id, starts_with_bos
from lens_steer.vectors import SteeringVector

# Bumped whenever a protocol's prompts, tokenisation or choice sets change; part of every prediction-store key.
# 2: BOS follows the tokenizer's default, continuations split as lm-eval does, lm-eval's MMLU letters, raw log-likelihoods.
SCORING_VERSION = 2
SCORINGS = ("cloze", "letter", "letter-calibrated", "letter-permuted", "generate")
DEFAULT_SCORING = "cloze"
PROMPT_FORMATS = ("reference", "lm_eval")
REFERENCE_INSTRUCTION = "Answer with only a single letter.\n\nThe following are multiple choice questions (with answers):\n"
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Question:
    """A multiple-choice question independent of its benchmark: `context` (may be empty), `question`, `options`.

    `answer_of[i]` is the answer that scored option i counts as (None: option i is answer i); it lets a
    choice set hold several phrasings of one answer, as lm-evaluation-harness's BBQ task does."""

    context: str
    question: str
    options: tuple[str, ...]
    subject: str | None = None  # MMLU's subject line in the lm_eval format
    answer_of: tuple[int, ...] | None = None

    @property
    def n_answers(self) -> int:
        """How many distinct answers the options stand for."""
        return len(self.options) if self.answer_of is None else max(self.answer_of) + 1


@dataclasses.dataclass(frozen=True)
class QuestionScore:
    """How one question was scored: the exact prompt and its token ids, the token ids of each scored option,
    per option the raw summed log-likelihood, its token count and the normalised score, and the answer.

    `pred` and `answer_scores` are in answer space (see `Question.answer_of`): an answer's score is the best
    normalised score among its options; `pred_option` is the argmax option itself."""

    prompt: str
    option_token_ids: list[list[int]]
    option_scores: list[float]
    pred: int
    option_scores_per_token: list[float] | None = None
    reply: str | None = None  # scoring "generate": the generated reply, and the rule that parsed it (pred -1: unparsed)
    parse_rule: str | None = None
    prompt_token_ids: list[int] = dataclasses.field(default_factory=list)
    option_logliks: list[float] = dataclasses.field(default_factory=list)
    option_token_counts: list[int] = dataclasses.field(default_factory=list)
    answer_scores: list[float] = dataclasses.field(default_factory=list)
    pred_option: int = 0
    bos: bool = False


def answer_view(q: Question, option_scores: np.ndarray) -> tuple[int, list[float], int]:
    """(answer, per-answer scores, argmax option) from normalised option scores; ties go to the first option."""
    best = int(np.argmax(option_scores))
    if q.answer_of is None:
        return best, [float(x) for x in option_scores], best
    per_answer = [-np.inf] * q.n_answers
    for i, a in enumerate(q.answer_of):
        per_answer[a] = max(per_answer[a], float(option_scores[i]))
    return q.answer_of[best], per_answer, best


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """`value` if it is one of `valid`, else a one-line error listing them."""
    if value not in valid:
        raise LensSteerError(f"unknown {what} {value!r}; use one of {', '.join(valid)}")
    return value


# ---- prompts --------------------------------------------------------------------------------
def _stem(q: Question) -> str:
    return f"{q.context} {q.question}".strip()


def letter_prompt(q: Question, order: Sequence[int], prompt_format: str, tokenizer: Any) -> tuple[str, list[str]]:
    """The prompt showing options in `order`, and the letter strings whose first tokens are compared."""
    k = len(q.options)
    if prompt_format == "reference":
        letters = [chr(ord("a") + i) for i in range(k)]
        body = _stem(q) + "\n" + "".join(f"({letters[j]}) {q.options[o]}\n" for j, o in enumerate(order))
        return render_chat(tokenizer, None, REFERENCE_INSTRUCTION + body), letters
    letters = [chr(ord("A") + i) for i in range(k)]
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n" if q.subject else ""
    stem = f"{q.context}\n\nQ: {q.question}\n" if q.context else f"{q.question.strip()}\n"
    body = "".join(f"{letters[j]}. {q.options[o]}\n" for j, o in enumerate(order))
    return header + stem + body + "Answer:", [" " + letter for letter in letters]


MMLU_LETTERS = ("A", "B", "C", "D")


def cloze_prompt(q: Question, prompt_format: str, tokenizer: Any) -> tuple[str, list[str]]:
    """The prompt and each option's continuation text.

    `lm_eval` follows lm-evaluation-harness's tasks: BBQ "{context}\n\nQ: {question}\nA:" with " " + answer;
    MMLU (a question with a subject) lists the choices and scores " A".." D"."""
    if prompt_format == "reference":
        return render_chat(tokenizer, None, _stem(q)), list(q.options)
    if q.subject is not None:
        header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
        body = "".join(f"{MMLU_LETTERS[j]}. {opt}\n" for j, opt in enumerate(q.options))
        return header + q.question.strip() + "\n" + body + "Answer:", [" " + MMLU_LETTERS[j] for j in range(len(q.options))]
    stem = f"{q.context}\n\nQ: {q.question}\nA:" if q.context else f"{q.question}\nAnswer:"
    return stem, [" " + opt for opt in q.options]


def encode_pair(model: HookedModel, context: str, continuation: str, *, move_trailing_whitespace: bool = True) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-evaluation-harness splits them: the continuation is the whole
    text's ids after the context's, and (with `move_trailing_whitespace`, as lm-eval does) trailing whitespace
    of the context moves to the continuation. A chat-rendered context keeps its assistant header's newline."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces and move_trailing_whitespace:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode_texts(model, [context + continuation])[0]
    ctx = encode_texts(model, [context])[0]
    return ctx, whole[len(ctx) :]


# ---- the forward pass -----------------------------------------------------------------------
class _FinalResidual(Exception):
    """Raised by a hook to stop the forward pass after the last block (before the unembedding)."""


@dataclasses.dataclass
class _Row:
    """One sequence to run: token ids, positions whose next-token distribution is read, and what to read there."""

    ids: list[int]
    positions: list[int]
    candidates: list[int] | None = None  # letter rows: logits of these ids at positions[0]
    targets: list[int] | None = None  # cloze rows: log-prob of targets[i] at positions[i]


class _Unembed:
    """Final norm and unembedding of selected residual vectors."""

    def __init__(self, model: HookedModel) -> None:
        self.ln_final = model.ln_final  # type: ignore[attr-defined]
        self.W_U: Tensor = model.W_U.detach()  # type: ignore[attr-defined]  # [d_model, vocab]
        b_U = getattr(model, "b_U", None)
        self.b_U: Tensor | None = None if b_U is None or not bool(b_U.abs().max() > 0) else b_U.detach()
        self.softcap = final_logit_softcap(hf_config(model))  # Gemma 2 caps its logits: c * tanh(logits / c)

    def logits(self, resid: Tensor) -> Tensor:
        out = self.ln_final(resid) @ self.W_U
        if self.b_U is not None:
            out = out + self.b_U
        if self.softcap is not None:
            out = self.softcap * torch.tanh(out / self.softcap)
        return out.float()


def final_residual(model: HookedModel, tokens: Tensor, forward_kwargs: dict[str, Any], extra_hooks: Sequence[tuple[str, Any]] = ()) -> Tensor:
    """Residual stream after the last block, `[batch, pos, d_model]`; the unembedding is never run.

    `extra_hooks` run during the same forward (e.g. capturing the residual at earlier blocks)."""
    name = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
    box: dict[str, Tensor] = {}

    def grab(tensor: Tensor, *, hook: Any) -> None:
        box["resid"] = tensor
        raise _FinalResidual

    try:
        with model.hooks(fwd_hooks=[*extra_hooks, (name, grab)]):
            model(tokens, **forward_kwargs)
    except _FinalResidual:
        pass
    if "resid" not in box:
        raise LensSteerError(f"hook {name} did not fire; the model does not follow the TransformerLens hook API")
    return box["resid"]


@dataclasses.dataclass(frozen=True)
class ResidualReuse:
    """Reuse of the residual entering block `start` (unchanged by the active steering) from `cache`."""

    cache: ResidualCache
    start: int


def residual_reuse_for(model: HookedModel, cache: ResidualCache | None, vector: SteeringVector | None) -> ResidualReuse | None:
    """How a forward steered by `vector` can reuse `cache`, or None (no cache, unsteered, or the model cannot run from a block)."""
    if cache is None or vector is None:
        return None
    start = start_block(vector.hook_names.values())
    if start is None or not can_run_blocks(model):
        return None
    return ResidualReuse(cache, start)


def _forward(model: HookedModel, tokens: Tensor, forward_kwargs: dict[str, Any], reuse: ResidualReuse | None, key: str, stored: Tensor | None) -> Tensor:
    """Final residual of a batch: from `stored` (its residual entering block `reuse.start`), or a full
    forward that also stores the batch's residuals in `reuse.cache`."""
    if stored is not None and reuse is not None:
        return run_blocks(model, stored, reuse.start, attention_mask=forward_kwargs.get("attention_mask"), past_key_values=forward_kwargs.get("past_key_values"),
                          position_ids=forward_kwargs.get("position_ids"))  # fmt: skip
    if reuse is None:
        return final_residual(model, tokens, forward_kwargs)
    captured: dict[int, Tensor] = {}
    resid = final_residual(model, tokens, forward_kwargs, capture_hooks(reuse.cache.capture_layers(reuse.start), captured))
    reuse.cache.put(key, captured)
    return resid


def _run_rows(
    model: HookedModel, rows: Sequence[_Row], *, max_batch: int, max_tokens: int, progress: Progress | None, progress_unit: float, reuse: ResidualReuse | None = None,
    tree: bool = False,
) -> list[np.ndarray]:
    """For each row: candidate log-probs over the full vocabulary (letter rows) or target log-probs (cloze rows).

    With `tree` (and a model taking a KV cache) the rows' shared token prefixes run once (`prefix_tree`)."""
    if tree and accepts_kv_cache(model):
        return _tree_rows(model, rows, max_batch=max_batch, max_tokens=max_tokens, progress=progress, progress_unit=progress_unit, reuse=reuse)
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    unembed = _Unembed(model)
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    done = 0.0
    reported = 0
    for batch_idx in length_batches([len(r.ids) for r in rows], max_batch=max_batch, max_tokens=max_tokens):
        batch = pad_batch([rows[i].ids for i in batch_idx], pad_id=pad_id(model), padding_side="right", device=device)
        with torch.inference_mode():
            key = batch_key(batch.tokens) if reuse is not None else ""
            stored = reuse.cache.get(key, reuse.start) if reuse is not None else None
            resid = _forward(model, batch.tokens, batch.forward_kwargs(), reuse, key, stored)
            letter = [(j, i) for j, i in enumerate(batch_idx) if rows[i].candidates is not None]
            if letter:
                sel = resid[[j for j, _ in letter], [rows[i].positions[0] for _, i in letter]]
                logp = torch.log_softmax(unembed.logits(sel), dim=-1)  # full vocabulary: raw log-likelihoods
                for r, (_, i) in enumerate(letter):
                    out[i] = logp[r, rows[i].candidates].cpu().numpy()
            cloze = [(j, i) for j, i in enumerate(batch_idx) if rows[i].targets is not None]
            if cloze:
                bj = [j for j, i in cloze for _ in rows[i].positions]
                pos = [p for _, i in cloze for p in rows[i].positions]
                tgt = torch.tensor([t for _, i in cloze for t in rows[i].targets], device=device)  # type: ignore[union-attr]
                logp = torch.log_softmax(unembed.logits(resid[bj, pos]), dim=-1)
                picked = logp[torch.arange(len(pos), device=device), tgt].cpu().numpy()
                start = 0
                for _, i in cloze:
                    n = len(rows[i].positions)
                    out[i] = picked[start : start + n]
                    start += n
        done += len(batch_idx) * progress_unit
        if progress is not None and int(done) > reported:
            progress(int(done) - reported)
            reported = int(done)
    if progress is not None and reported < int(round(done)):
        progress(int(round(done)) - reported)
    return out


TREE_BATCH_SCALE = 4  # a tree batch may hold this many times `max_batch` rows and `max_tokens` positions
TREE_PADDING_SIDE = "right"  # how a tree batch pads its rows (paths are always left-padded); both are exact


def tree_row_tokens(model: HookedModel, seqs: Sequence[Sequence[int]]) -> int:
    """How many tokens a packed row of the prefix tree may hold for these sequences on this model: the default,
    or 0 (every segment its own row) where a sliding window shorter than the longest sequence would make a packed
    row's single mask wrong for the sliding layers."""
    window = sliding_window(hf_config(model))
    if window is not None and max(map(len, seqs)) > window:
        return 0
    return DEFAULT_ROW_TOKENS


def _tree_rows(
    model: HookedModel, rows: Sequence[_Row], *, max_batch: int, max_tokens: int, progress: Progress | None, progress_unit: float, reuse: ResidualReuse | None,
    padding_side: str | None = None,
) -> list[np.ndarray]:
    """`_run_rows` over a prefix tree of the rows' token ids. With `reuse`, the tree runs from block `reuse.start`
    only when every batch of it has its residual stored (the keys/values must cover the same blocks); else in full,
    storing them."""
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    unembed = _Unembed(model)
    seqs = [r.ids for r in rows]
    plan = TreePlan(seqs, max_batch=max_batch * TREE_BATCH_SCALE, max_tokens=max_tokens * TREE_BATCH_SCALE, kv_bytes=kv_bytes_per_token(model),
                    padding_side=padding_side or TREE_PADDING_SIDE, max_row=tree_row_tokens(model, seqs))  # fmt: skip
    stored_all = reuse is not None and all(reuse.cache.get(b.key, reuse.start) is not None for b in plan.batches)
    reads = [[(r.positions[0], r.candidates)] if r.candidates is not None else [(p, [t]) for p, t in zip(r.positions, r.targets or [])] for r in rows]

    def forward(tokens: Tensor, kwargs: dict[str, Any], key: str) -> Tensor:
        stored = reuse.cache.get(key, reuse.start) if reuse is not None and stored_all else None
        return _forward(model, tokens, kwargs, reuse, key, stored)

    state = {"done": 0.0, "reported": 0}

    def done(_: int) -> None:
        state["done"] += progress_unit
        if progress is not None and int(state["done"]) > state["reported"]:
            progress(int(state["done"]) - int(state["reported"]))
            state["reported"] = int(state["done"])

    with torch.inference_mode():
        got = run_tree(plan, seqs, reads, forward=forward, logits=unembed.logits, n_layers=int(model.cfg.n_layers), first_layer=reuse.start if stored_all and reuse is not None else 0,
                       pad_id=pad_id(model), device=device, done=done)  # fmt: skip
    if progress is not None and state["reported"] < int(round(state["done"])):
        progress(int(round(state["done"])) - int(state["reported"]))
    return [g[0] if r.candidates is not None else np.concatenate(g) for r, g in zip(rows, got)]


def first_token(model: HookedModel, text: str) -> int:
    """The first token id of `text` encoded without special tokens (an option letter's token)."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LensSteerError(f"option label {text!r} encodes to no token")
    return int(ids[0])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# ---- protocols ------------------------------------------------------------------------------
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
    KV cache), each distinct token prefix of the items' sequences runs once (`lens_steer.prefix_tree`); False
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
    rows: list[_Row] = []
    for q in questions:
        k = len(q.options)
        orders = [list(range(k))] if scoring != "letter-permuted" else [[(j + s) % k for j in range(k)] for s in range(k)]
        texts = []
        for order in orders:
            text, letters = letter_prompt(q, order, prompt_format, tok)
            ids = encode_texts(model, [text])[0]
            rows.append(_Row(ids, [len(ids) - 1], candidates=[first_token(model, letter) for letter in letters]))
            texts.append(text)
            if len(texts) == 1:
                prompt_ids.append(ids)
        prompts.append(texts)
    unit = len(questions) / len(rows)
    raw = _run_rows(model, rows, max_batch=max_batch, max_tokens=max_tokens, progress=progress, progress_unit=unit, reuse=reuse, tree=prefix_tree)
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
            per_question.append(_log_softmax(raw[r]))
            logliks.append(np.asarray(raw[r], dtype=float))
            r += 1
    if scoring == "letter-calibrated":
        prior = _letter_prior(per_question)
        per_question = [_log_softmax(lp - prior[: len(lp)]) for lp in per_question]
    r = 0
    for q, texts, lp, ll, ids0 in zip(questions, prompts, per_question, logliks, prompt_ids):
        ids = [[int(t)] for t in rows[r].candidates or []]  # per option, its letter's token (in the first order shown)
        r += len(texts)
        pred, per_answer, best = answer_view(q, lp)
        scores.append(
            QuestionScore(
                "\n\n".join(texts), ids, lp.tolist(), pred, prompt_token_ids=ids0, option_logliks=[float(x) for x in ll],
                option_token_counts=[1] * len(lp), answer_scores=per_answer, pred_option=best, bos=starts_with_bos(model, ids0),
            )
        )
    return scores


def _score_generated(model: HookedModel, questions: Sequence[Question], prompt_format: str, max_batch: int, progress: Progress | None) -> list[QuestionScore]:
    """The SVE paper's protocol (lens_steer.generation): greedy replies to its letter prompt, parsed as its code parses them."""
    if prompt_format != "reference":
        raise LensSteerError("--scoring generate is the SVE paper's protocol; use it with --prompt-format reference")
    prompts = [letter_prompt(q, range(len(q.options)), "reference", model.tokenizer)[0] for q in questions]
    answers = generate_answers(model, prompts, [q.options for q in questions], option_text=[q.subject is None for q in questions], max_batch=max_batch, progress=progress)
    return [
        QuestionScore(a.prompt, [a.reply_token_ids], [], a.pred, reply=a.reply, parse_rule=a.rule, prompt_token_ids=a.prompt_token_ids,
                      pred_option=a.pred, bos=starts_with_bos(model, a.prompt_token_ids))
        for a in answers
    ]


def permutation_average(letter_logits: Sequence[np.ndarray]) -> np.ndarray:
    """Option log-probs averaged over cyclic orders: order s shows option (j + s) % k at letter j."""
    k = len(letter_logits)
    acc = np.zeros(k)
    for s, logits in enumerate(letter_logits):
        lp = _log_softmax(np.asarray(logits, dtype=float))
        for j in range(k):
            acc[(j + s) % k] += lp[j] / k
    return _log_softmax(acc)


def _letter_prior(per_question: Sequence[np.ndarray]) -> np.ndarray:
    """Mean log-probability of each letter position over the questions (the model's letter preference)."""
    width = max(len(lp) for lp in per_question)
    sums, counts = np.zeros(width), np.zeros(width)
    for lp in per_question:
        sums[: len(lp)] += lp
        counts[: len(lp)] += 1
    return sums / np.maximum(counts, 1)


def _score_cloze(
    model: HookedModel, questions: Sequence[Question], prompt_format: str, max_batch: int, max_tokens: int, progress: Progress | None, reuse: ResidualReuse | None,
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
        raw = _cloze_shared_prefix(model, prompt_ids, cont_ids, max_batch=max_batch, max_tokens=max_tokens, progress=progress, reuse=reuse)
    else:  # one sequence per option: over a prefix tree, or (TL 3.x HookedTransformer takes no Hugging Face cache) each in full
        rows = [_Row(p + o, list(range(len(p) - 1, len(p) - 1 + len(o))), targets=o) for p, opts in zip(prompt_ids, cont_ids) for o in opts]
        flat = _run_rows(model, rows, max_batch=max_batch, max_tokens=max_tokens, progress=progress, progress_unit=len(questions) / len(rows), reuse=reuse, tree=tree)
        raw, r = [], 0
        for opts in cont_ids:
            raw.append(flat[r : r + len(opts)])
            r += len(opts)
    scores = []
    for q, text, ids0, opts, lps in zip(questions, prompts, prompt_ids, cont_ids, raw):
        summed = np.array([float(x.sum()) for x in lps])
        per_tok = np.array([float(x.mean()) for x in lps])
        normalised = _log_softmax(summed)
        pred, _, best = answer_view(q, summed)
        scores.append(
            QuestionScore(
                text, opts, normalised.tolist(), pred, _log_softmax(per_tok).tolist(), prompt_token_ids=ids0,
                option_logliks=summed.tolist(), option_token_counts=[len(o) for o in opts],
                answer_scores=answer_view(q, normalised)[1], pred_option=best, bos=starts_with_bos(model, ids0),
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
    unembed = _Unembed(model)
    out: list[list[np.ndarray]] = [[] for _ in prompt_ids]
    side = "left" if sliding_window(hf_config(model)) is not None else "right"  # a sliding window would count the pads between prompt and option
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
                if any(x is None for x in stored):  # both passes reuse or both run in full: the KV cache must cover the same blocks
                    stored = [None, None]
            resid_prompt, shared = run_shared_prefix(
                lambda cache: _forward(model, prompts.tokens, {"past_key_values": cache, **prompts.forward_kwargs()}, reuse, keys[0], stored[0]), prompts.attention_mask
            )
            last_prompt = resid_prompt[torch.arange(len(batch_idx), device=device), prompts.last_index]  # predicts each option's first token
            resid_cont = _forward(model, conts.tokens, shared.row_kwargs(owner, conts.attention_mask), reuse, keys[1], stored[1])
            rows, pos = [], []
            for r, o in enumerate(options):
                rows += [r] * (len(o) - 1)
                pos += list(range(len(o) - 1))
            sel = torch.cat([last_prompt[owner], resid_cont[rows, pos]]) if rows else last_prompt[owner]
            logp = torch.log_softmax(unembed.logits(sel), dim=-1)
            first = logp[: len(options)]
            rest = logp[len(options) :]
            picked_first = first[torch.arange(len(options), device=device), torch.tensor([o[0] for o in options], device=device)].cpu().numpy()
            rest_targets = [t for o in options for t in o[1:]]
            picked_rest = rest[torch.arange(len(rest_targets), device=device), torch.tensor(rest_targets, dtype=torch.long, device=device)].cpu().numpy() if rest_targets else np.empty(0)
        r_off = 0
        for r, o in enumerate(options):
            vals = np.concatenate([[picked_first[r]], picked_rest[r_off : r_off + len(o) - 1]])
            r_off += len(o) - 1
            out[batch_idx[int(owner[r])]].append(vals)
        if progress is not None:
            progress(len(batch_idx))
    return out


@contextmanager
def maybe_steer(model: HookedModel, vector: SteeringVector | None, coeff: float) -> Iterator[None]:
    """Steer with `coeff * vector` inside the block, or do nothing without a vector or at coeff 0."""
    ctx = steer(model, [(vector, coeff)]) if vector is not None and coeff != 0 else nullcontext()
    with ctx:
        yield


def score_steered(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    residual_cache: ResidualCache | None = None,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix_tree: bool = True,
) -> list[QuestionScore]:
    """`score_questions` steered by `coeff * vector` (if given); with `residual_cache`, the residual entering
    the first steered block is reused across calls on the same questions."""
    reuse = residual_reuse_for(model, residual_cache, vector) if coeff != 0 else None
    with maybe_steer(model, vector, coeff):
        return score_questions(model, questions, scoring=scoring, prompt_format=prompt_format, max_batch=max_batch, progress=progress, reuse=reuse, prefix_tree=prefix_tree)


def sequence_logprobs(model: HookedModel, texts: Sequence[str], *, max_batch: int = 16, max_tokens: int = 3072, progress: Progress | None = None) -> list[float]:
    """Summed log-probability of each text's tokens after the first (CrowS-Pairs)."""
    rows = []
    for ids in encode_texts(model, texts):
        if len(ids) < 2:
            raise LensSteerError("a text needs at least two tokens to be scored")
        rows.append(_Row(ids, list(range(len(ids) - 1)), targets=ids[1:]))
    raw = _run_rows(model, rows, max_batch=max_batch, max_tokens=max_tokens, progress=progress, progress_unit=1.0)
    return [float(x.sum()) for x in raw]
