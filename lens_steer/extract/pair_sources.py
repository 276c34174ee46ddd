"""The contrastive pair set a search's parameters name: a persona corpus (the paper's persona system prompts over
a prompt corpus) or `bbq_answer` (the axis's BBQ **train** items, gold answer versus the stereotyped one, the
later paper's BBQ-derived pairs). One function builds either, so the search, the activation cache and the ISV
files that record a choice agree on what it means."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from lens_steer.data.select import select
from lens_steer.errors import StudyError
from lens_steer.extract.pairs import (
    CORPORA,
    ContrastivePair,
    PairSet,
    bbq_answer_pairs,
    bbq_cloze_pairs,
    load_corpus,
    persona_pairs,
)
from lens_steer.files import json_sha256, sha256_hex

BBQ_ANSWER = "bbq_answer"  # the later paper's letter pairs ("... Answer: (" + letter), plain text
BBQ_CLOZE = "bbq_cloze"  # the evaluator's own format: the scored chat prompt + an answer's text
BBQ_CORPORA: tuple[str, ...] = (BBQ_CLOZE, BBQ_ANSWER)
SEARCH_CORPORA: tuple[str, ...] = (*CORPORA, *BBQ_CORPORA)  # what a search space may name
# what it searches by default: bbq_answer's gold-vs-stereotyped letters cancel (letters spread evenly over a/b/c;
# its mean contrast is near null, tests/test_pair_sources.py), so only the evaluator-format pairs are searched
DEFAULT_CORPORA: tuple[str, ...] = (*CORPORA, BBQ_CLOZE)


@dataclasses.dataclass(frozen=True)
class PairSource:
    """Where `bbq_answer` pairs come from: the axis's train split of `bbq_source`, cut by `split_seed` (the same
    cut the study's validation and test items come from), in an order shuffled by `data_seed`."""

    axis: str
    bbq_source: str = "official"
    split_seed: int = 0
    data_seed: int = 0
    generated_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (kept in an ISV's provenance)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PairSource:
        """The source a provenance recorded."""
        return cls(**{f.name: obj[f.name] for f in dataclasses.fields(cls) if f.name in obj})


def uses_persona(corpus: str) -> bool:
    """Whether the persona and template parameters shape this corpus's pairs."""
    return corpus not in BBQ_CORPORA


@functools.lru_cache(maxsize=32)
def train_items(source: PairSource, data_root: str | None) -> tuple[Any, ...]:
    """The source's BBQ train items in data-seed order (read once)."""
    items = select(
        source.axis,
        "train",
        source=source.bbq_source,
        split_seed=source.split_seed,
        data_root=data_root,
        generated_dir=source.generated_dir,
    )
    return tuple(sorted(items, key=lambda it: sha256_hex(repr((source.data_seed, it.category, it.example_id)))))


@functools.lru_cache(maxsize=32)
def _bbq_answer_pool(source: PairSource, data_root: str | None) -> PairSet:
    """Every letter pair of the source's train items, in data-seed order, its texts' hash in the provenance."""
    pool = bbq_answer_pairs(train_items(source, data_root), split_name="train")
    return PairSet(pool.pairs, {**pool.provenance, "sha256": pair_texts_sha256(pool.pairs)})


def _bbq_pool(corpus: str, source: PairSource, data_root: str | None, tokenizer: Any) -> PairSet:
    """Every train pair of `corpus` (a BBQ corpus) from the source, in data-seed order."""
    if corpus == BBQ_ANSWER:
        return _bbq_answer_pool(source, data_root)
    if tokenizer is None:
        raise StudyError(f"corpus {BBQ_CLOZE!r} renders the evaluator's chat prompt; pass the model's tokenizer")
    pool = bbq_cloze_pairs(train_items(source, data_root), split_name="train", tokenizer=tokenizer)
    return PairSet(pool.pairs, {**pool.provenance, "sha256": pair_texts_sha256(pool.pairs)})


def pair_texts_sha256(pairs: tuple[ContrastivePair, ...]) -> str:
    """A hash of the pairs' texts, in order."""
    return json_sha256([[p.positive, p.negative] for p in pairs])


def available_pairs(
    corpus: str, source: PairSource | None, data_root: str | Path | None = None, tokenizer: Any = None
) -> int:
    """How many pairs `corpus` can give (the largest `num_sents` it serves)."""
    if corpus in BBQ_CORPORA:
        root = None if data_root is None else str(data_root)
        return len(_bbq_pool(corpus, _need_source(source), root, tokenizer))
    return len(load_corpus(corpus, data_root=data_root))


def _need_source(source: PairSource | None) -> PairSource:
    if source is None:
        raise StudyError(
            f"corpus {BBQ_ANSWER!r} needs the axis and split its BBQ train items come from; pass a PairSource"
        )
    return source


def search_pairs(
    corpus: str,
    num_sents: int,
    persona: int,
    template: int,
    *,
    tokenizer: Any = None,
    source: PairSource | None = None,
    data_root: str | Path | None = None,
) -> PairSet:
    """The first `num_sents` pairs a search trial's (corpus, num_sents, persona, template) name; a set of n is
    the first n of any larger one. For the BBQ corpora (`bbq_cloze`, `bbq_answer`) persona and template play no part,
    and an axis with fewer train pairs than asked gives all it has (`n_pairs` in the provenance says how many)."""
    if corpus not in BBQ_CORPORA:
        return persona_pairs(corpus, num_sents, persona, template, tokenizer=tokenizer, data_root=data_root)
    src = _need_source(source)
    pool = _bbq_pool(corpus, src, None if data_root is None else str(data_root), tokenizer)
    n = min(num_sents, len(pool))  # a small axis gives all it has; the count used is in the provenance
    ids = pool.provenance["example_ids"][:n]
    prov = {
        **pool.provenance,
        "corpus": corpus,
        "n_pairs": n,
        "n_asked": num_sents,
        "example_ids": ids,
        "source": src.to_json(),
    }
    chosen = pool.pairs[:n]
    return PairSet(tuple(chosen), prov)


__all__ = [
    "BBQ_ANSWER",
    "BBQ_CLOZE",
    "BBQ_CORPORA",
    "DEFAULT_CORPORA",
    "SEARCH_CORPORA",
    "PairSource",
    "available_pairs",
    "pair_texts_sha256",
    "search_pairs",
    "train_items",
    "uses_persona",
]
