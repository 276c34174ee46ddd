"""The contrastive pair builders by kind, one short name each (`lens_steer.pairs` at the top level): persona prompts
for an axis, BBQ answer pairs for an axis, ready sentence pairs, CrowS-Pairs rows and a JSONL file. Each returns a
`PairSet` whose positive side is the one to steer towards (see `lens_steer.extract.pairs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lens_steer.axes import get_axis
from lens_steer.extract.pair_sources import BBQ_CLOZE, PairSource, available_pairs, search_pairs
from lens_steer.extract.pairs import (
    CORPORA,
    PERSONA_PAIRS,
    READY_PAIRS,
    SYSTEM_TEMPLATES,
    PairSet,
    axis_persona_pairs,
    crows_pairs,
    load_pairs_jsonl,
    ready_pairs,
)
from lens_steer.model.load import HookedModel


def persona(
    axis: str,
    model: Any,
    n: int = 50,
    *,
    persona: int = 0,
    template: int = 0,
    corpus: str | None = None,
    data_root: str | Path | None = None,
) -> PairSet:
    """The first `n` prompts of the axis's corpus (or `corpus`), each under the unbiased persona's system prompt
    (positive) and the biased one's (negative), rendered with `model`'s chat template (the paper's pairs)."""
    return axis_persona_pairs(
        axis, model.tokenizer, num_sents=n, persona=persona, template=template, corpus=corpus, data_root=data_root
    )


def bbq(
    axis: str,
    model: HookedModel,
    n: int | None = None,
    *,
    source: str = "official",
    split_seed: int = 0,
    data_seed: int = 0,
    data_root: str | Path | None = None,
) -> PairSet:
    """`n` (default all) pairs from the axis's BBQ **train** items in the evaluator's own format (`model`'s chat
    prompt, then an answer's text): the unbiased answer (positive) against the stereotyped one (negative), in the
    order the search draws them (`data_seed`)."""
    src = PairSource(get_axis(axis).name, bbq_source=source, split_seed=split_seed, data_seed=data_seed)
    tok = model.tokenizer
    count = available_pairs(BBQ_CLOZE, src, data_root, tok) if n is None else n
    return search_pairs(BBQ_CLOZE, count, 0, 0, tokenizer=tok, source=src, data_root=data_root)


def ready(name: str, n: int | None = None, *, data_root: str | Path | None = None) -> PairSet:
    """`n` (default all) ready sentence pairs of `name` (READY_PAIRS), the anti-stereotypical sentence positive."""
    return ready_pairs(name, limit=n, data_root=data_root)


def crows(bias_type: str, n: int | None = None, *, data_root: str | Path | None = None) -> PairSet:
    """`n` (default all) CrowS-Pairs rows of `bias_type`: the less stereotypical sentence positive."""
    return crows_pairs(bias_type, limit=n, data_root=data_root)


def jsonl(path: str | Path) -> PairSet:
    """Pairs from a JSONL file of `{"positive": ..., "negative": ...}` lines."""
    return load_pairs_jsonl(path)


__all__ = [
    "CORPORA",
    "PERSONA_PAIRS",
    "READY_PAIRS",
    "SYSTEM_TEMPLATES",
    "PairSet",
    "bbq",
    "crows",
    "jsonl",
    "persona",
    "ready",
]
