"""Contrastive activations cached for reuse: last-token activations of persona pair sets at a search's candidate
layers, in memory (LRU) and on disk, keyed by everything that determines them, each stored row checked against the
pair it was read from. A set is read only as deep as a request needs and deepened when a later one needs more."""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lens_steer.errors import StudyError
from lens_steer.extract.activations import PairActivations, pair_activations
from lens_steer.extract.pair_sources import PairSource, search_pairs, uses_persona
from lens_steer.extract.pairs import PairSet
from lens_steer.files import atomic_write_bytes, json_sha256
from lens_steer.model.fingerprint import model_key
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.steering.formats import load_tensors_file


def _tokenizer_label(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def pair_digests(pairs: PairSet, n: int) -> list[str]:
    """A short hash of each of the first `n` pairs' texts (what a cached row was read from)."""
    return [json_sha256([p.positive, p.negative], 16) for p in pairs.pairs[:n]]


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A cached pair set: its activations (at some of the cache's layers) and the model reads they came from:
    `reads[i] = (lo, hi)` read pairs lo..hi-1 in one call, and rows lo.. up to the next read's lo (or the end) are
    its."""

    acts: PairActivations
    reads: tuple[tuple[int, int], ...]


class ActivationCache:
    """Last-token activations of a search's pair sets at its candidate layers, keyed by (corpus, persona, template).

    `num_sents` selects the first prompts of a corpus, so a set of n pairs is the first n rows of any
    larger one: a request is served by slicing, or by reading only the missing pairs and appending.
    A set is first read only up to the deepest layer asked for (`get(..., layers=)`), every candidate layer
    up to it kept; a later request for a deeper layer re-reads the set at every candidate layer, each earlier
    read again over the same pairs, so every value equals what one read at all layers gives, bit for bit.
    In-process LRU of `max_entries` datasets; with `disk_dir`, entries also persist in files keyed by everything
    that determines their content (model name and weights fingerprint, hook, layers, corpus hash, persona, template,
    tokenizer). `hits`, `misses`, `pairs_read` and `layer_reads` (pairs times blocks run) count the work done.
    """

    def __init__(
        self,
        model: HookedModel,
        layers: Sequence[int],
        *,
        hook: str = "hook_resid_post",
        max_entries: int = 16,
        disk_dir: str | Path | None = None,
        data_root: str | Path | None = None,
        max_batch: int = 16,
        source: PairSource | None = None,
    ) -> None:
        if max_entries < 1:
            raise StudyError(f"activation cache needs max_entries >= 1, got {max_entries}")
        self.model, self.layers, self.hook = model, tuple(sorted(set(layers))), hook
        self.max_entries, self.data_root, self.max_batch, self.source = max_entries, data_root, max_batch, source
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._mem: collections.OrderedDict[tuple[str, int, int], _Entry] = collections.OrderedDict()
        self.hits = self.misses = self.pairs_read = self.layer_reads = 0
        self._model_key: dict[str, Any] | None = None

    def pairs(self, corpus: str, num_sents: int, persona: int, template: int) -> PairSet:
        """The pair set these activations come from."""
        return search_pairs(
            corpus,
            num_sents,
            persona,
            template,
            tokenizer=self.model.tokenizer,
            source=self.source,
            data_root=self.data_root,
        )

    def _disk_path(self, key: tuple[str, int, int], corpus_sha: str) -> Path | None:
        if self.disk_dir is None:
            return None
        if self._model_key is None:
            self._model_key = model_key(self.model)  # name and weights fingerprint (depth, width, processing...)
        blob = {
            **self._model_key,
            "hook": self.hook,
            "layers": list(self.layers),
            "corpus": key[0],
            "corpus_sha256": corpus_sha,
            "persona": key[1],
            "template": key[2],
            "tokenizer": _tokenizer_label(self.model.tokenizer),
        }
        return self.disk_dir / f"acts-{json_sha256(blob, 24)}.pt"

    def get(
        self, corpus: str, num_sents: int, persona: int, template: int, layers: Sequence[int] | None = None
    ) -> PairActivations:
        """Activations of `search_pairs(corpus, num_sents, persona, template)` at `layers` (default: all the cache's
        layers) and possibly at more of them."""
        need = tuple(sorted(set(self.layers if layers is None else layers)))
        if not need or not set(need) <= set(self.layers):
            raise StudyError(
                f"activation cache holds layers {list(self.layers)}; layers {list(need)} were asked for; build the "
                "cache with those layers"
            )
        pairs = self.pairs(corpus, num_sents, persona, template)
        num_sents = len(pairs)
        key = (corpus, persona, template) if uses_persona(corpus) else (corpus, 0, 0)
        have = self._mem.get(key)
        disk = self._disk_path(key, pairs.provenance["sha256"])
        if have is None and disk is not None and disk.is_file():
            have = self._load(disk, pairs)
        if have is not None and len(have.acts) >= num_sents and set(need) <= set(have.acts.layers):
            self.hits += 1
        else:
            self.misses += 1
            if have is not None and not set(need) <= set(
                have.acts.layers
            ):  # deepen: every earlier read again, at every layer
                have = self._reread(corpus, persona, template, have)
            if have is None:
                have = _Entry(
                    self._read(pairs, 0, num_sents, tuple(x for x in self.layers if x <= need[-1])), ((0, num_sents),)
                )
            elif len(have.acts) < num_sents:
                extra = self._read(pairs, len(have.acts), num_sents, have.acts.layers)
                have = _Entry(_concat_acts(have.acts, extra), (*have.reads, (len(have.acts), num_sents)))
            if disk is not None:
                self._save(
                    disk,
                    have,
                    pairs if len(pairs) >= len(have.acts) else self.pairs(corpus, len(have.acts), persona, template),
                )
        self._mem[key] = have
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)
        return _slice_acts(have.acts, num_sents, {**pairs.provenance, "n_pairs": num_sents})

    def _read(self, pairs: PairSet, lo: int, hi: int, layers: Sequence[int]) -> PairActivations:
        """Pairs lo..hi-1 of `pairs`, read by the model in one call at `layers`."""
        self.pairs_read += hi - lo
        self.layer_reads += (hi - lo) * (max(layers) + 1)
        return pair_activations(
            self.model, PairSet(pairs.pairs[lo:hi], pairs.provenance), layers, hook=self.hook, max_batch=self.max_batch
        )

    def _reread(self, corpus: str, persona: int, template: int, entry: _Entry) -> _Entry:
        """`entry` at every layer of the cache: each of its reads repeated over the same pairs, its rows kept."""
        n = len(entry.acts)
        pairs = self.pairs(corpus, max(hi for _, hi in entry.reads), persona, template)
        ends = [lo for lo, _ in entry.reads[1:]] + [n]
        parts = [
            _slice_acts(self._read(pairs, lo, hi, self.layers), end - lo, entry.acts.provenance)
            for (lo, hi), end in zip(entry.reads, ends)
        ]
        return _Entry(functools.reduce(_concat_acts, parts), entry.reads)

    def _save(self, path: Path, entry: _Entry, pairs: PairSet) -> None:
        buf = io.BytesIO()
        acts, n = entry.acts, len(entry.acts)
        torch.save(
            {
                "positive": dict(acts.positive),
                "negative": dict(acts.negative),
                "n": n,
                "layers": list(self.layers),
                "read_layers": list(acts.layers),
                "reads": [list(r) for r in entry.reads],
                "hook": self.hook,
                "pairs": pair_digests(pairs, n),
            },
            buf,
        )
        atomic_write_bytes(path, buf.getvalue())

    def _load(self, path: Path, pairs: PairSet) -> _Entry | None:
        """The entry stored at `path` for the first pairs of `pairs` (at most as many as `pairs` holds), or None
        when the file is damaged, was written for other layers or another hook, or was read from other pair texts."""
        ident = model_identity(self.model)
        try:
            obj = load_tensors_file(path)  # tensors, lists and numbers only: a file carrying code is refused
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
            return None  # truncated or damaged: re-read from the model, never trusted
        except Exception as e:
            if type(e).__name__ == "UnpicklingError":  # weights_only refused what the file holds
                return None
            raise
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("n"), int)
            or obj.get("layers") != list(self.layers)
            or obj.get("hook") != self.hook
        ):
            return None
        n, sides = obj["n"], (obj.get("positive"), obj.get("negative"))
        read_layers, reads = (
            obj.get("read_layers", list(self.layers)),
            obj.get("reads", [[0, n]]),
        )  # files written before lazy reads: all layers, one read
        if (
            not isinstance(read_layers, list)
            or not read_layers
            or not set(read_layers) <= set(self.layers)
            or not _valid_reads(reads, n)
        ):
            return None
        whole = n >= 1 and all(
            isinstance(side, dict)
            and set(side) == set(read_layers)
            and all(
                isinstance(v, torch.Tensor) and v.shape == (n, ident.d_model) and bool(torch.isfinite(v).all())
                for v in side.values()
            )
            for side in sides
        )
        keep = min(n, len(pairs))
        if not whole or not isinstance(obj.get("pairs"), list) or obj["pairs"][:keep] != pair_digests(pairs, keep):
            return None
        pos, neg = ({k: v[:keep] for k, v in side.items()} for side in sides)  # type: ignore[union-attr]
        kept_reads = tuple((lo, hi) for lo, hi in reads if lo < keep)
        return _Entry(
            PairActivations(pos, neg, self.hook, ident.name, ident.d_model, dict(ident.processing), pairs.provenance),
            kept_reads,
        )


def _valid_reads(reads: Any, n: int) -> bool:
    """Whether `reads` (as stored) describe rows 0..n-1: [[lo, hi], ...], lo from 0 rising, each hi past its rows."""
    if (
        not isinstance(reads, list)
        or not reads
        or not all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) for r in reads)
    ):
        return False
    los = [lo for lo, _ in reads]
    ends = los[1:] + [n]
    return los[0] == 0 and all(lo < end <= hi for (lo, hi), end in zip(reads, ends))


def _concat_acts(a: PairActivations, b: PairActivations) -> PairActivations:
    return dataclasses.replace(
        a,
        positive={k: torch.cat([a.positive[k], b.positive[k]]) for k in a.positive},
        negative={k: torch.cat([a.negative[k], b.negative[k]]) for k in a.negative},
    )


def _slice_acts(a: PairActivations, n: int, provenance: Mapping[str, Any]) -> PairActivations:
    return dataclasses.replace(
        a,
        positive={k: v[:n] for k, v in a.positive.items()},
        negative={k: v[:n] for k, v in a.negative.items()},
        provenance=dict(provenance),
    )


__all__ = ["ActivationCache", "pair_digests"]
