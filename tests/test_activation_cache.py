"""Tests for lens_steer.activation_cache: cached activations equal fresh ones; a file read from other pair texts
or other layers is recomputed."""

from __future__ import annotations

from pathlib import Path

import torch
from _study_fixtures import needs_data, tiny  # noqa: F401 (tiny: a fixture)

from lens_steer.activation_cache import ActivationCache
from lens_steer.extract import pair_activations, vector_from_activations
from lens_steer.pairs import persona_pairs


@needs_data
def test_cached_activations_equal_fresh_extraction(tiny, tmp_path: Path) -> None:
    cache = ActivationCache(tiny, (1, 2), disk_dir=tmp_path / "cache")
    small = cache.get("age", 4, 1, 0)
    grown = cache.get("age", 9, 1, 0)  # reads only pairs 4..8 and appends
    again = cache.get("age", 6, 1, 0)  # a slice, no model call
    assert (cache.misses, cache.hits, cache.pairs_read) == (2, 1, 9)
    fresh = pair_activations(tiny, persona_pairs("age", 9, 1, 0, tokenizer=tiny.tokenizer), (1, 2))
    for layer in (1, 2):
        assert torch.allclose(grown.positive[layer], fresh.positive[layer], atol=1e-5)
        assert torch.allclose(small.negative[layer], fresh.negative[layer][:4], atol=1e-5)
        assert torch.allclose(again.positive[layer], fresh.positive[layer][:6], atol=1e-5)
    for method in ("pca_diff", "mean_diff"):
        a = vector_from_activations(grown, method, [1, 2]).directions
        b = vector_from_activations(fresh, method, [1, 2]).directions
        assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in (1, 2))
    assert again.provenance["num_sents"] == 6 and again.provenance["n_pairs"] == 6
    disk = ActivationCache(tiny, (1, 2), disk_dir=tmp_path / "cache")
    from_disk = disk.get("age", 9, 1, 0)
    assert disk.pairs_read == 0 and torch.equal(from_disk.positive[2], grown.positive[2])


@needs_data
def test_a_cache_file_read_from_other_pairs_is_recomputed(tiny, tmp_path: Path) -> None:
    import shutil

    cache = ActivationCache(tiny, (1,), disk_dir=tmp_path / "a")
    cache.get("age", 4, 0, 0)
    [written] = list((tmp_path / "a").glob("*.pt"))
    other = ActivationCache(tiny, (1,), disk_dir=tmp_path / "b")
    other.get("age", 4, 1, 0)  # persona 1: other pair texts, same corpus
    [foreign] = list((tmp_path / "b").glob("*.pt"))
    shutil.copy(foreign, written)  # the right file name, rows read from other pairs (e.g. an older rendering of the prompts)
    again = ActivationCache(tiny, (1,), disk_dir=tmp_path / "a")
    got = again.get("age", 4, 0, 0)
    fresh = pair_activations(tiny, persona_pairs("age", 4, 0, 0, tokenizer=tiny.tokenizer), (1,))
    assert again.pairs_read == 4 and torch.allclose(got.positive[1], fresh.positive[1], atol=1e-5)


@needs_data
def test_a_cache_file_of_other_layers_or_damaged_is_recomputed(tiny, tmp_path: Path) -> None:
    cache = ActivationCache(tiny, (1, 2), disk_dir=tmp_path)
    first = cache.get("age", 4, 0, 0)
    [path] = list(tmp_path.glob("*.pt"))
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "layers": [1], "positive": {1: obj["positive"][1]}, "negative": {1: obj["negative"][1]}}, path)
    again = ActivationCache(tiny, (1, 2), disk_dir=tmp_path)
    assert torch.allclose(again.get("age", 4, 0, 0).positive[2], first.positive[2]) and again.pairs_read == 4
    path.write_bytes(path.read_bytes()[:100])  # cut mid-write
    third = ActivationCache(tiny, (1, 2), disk_dir=tmp_path)
    assert torch.allclose(third.get("age", 4, 0, 0).negative[1], first.negative[1]) and third.pairs_read == 4
