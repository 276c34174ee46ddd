"""Tests for lens_steer.extract.activation_cache: cached activations equal fresh ones; a file read from other pair texts
or other layers is recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _study_fixtures import needs_data, tiny  # noqa: F401 (tiny: a fixture)

from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.extract.activations import pair_activations, vector_from_activations
from lens_steer.extract.pairs import persona_pairs


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
    shutil.copy(
        foreign, written
    )  # the right file name, rows read from other pairs (e.g. an older rendering of the prompts)
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


@needs_data
@pytest.mark.parametrize("protocol", [4, 5])
def test_a_legacy_pickle_in_the_cache_is_recomputed_without_a_warning(tiny, tmp_path: Path, protocol: int) -> None:
    import pickle
    import warnings

    cache = ActivationCache(tiny, (1,), disk_dir=tmp_path)
    first = cache.get("age", 4, 0, 0)
    [path] = list(tmp_path.glob("*.pt"))
    path.write_bytes(pickle.dumps({"n": 4, "layers": [1]}, protocol=protocol))  # written by plain pickle, not torch
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = ActivationCache(tiny, (1,), disk_dir=tmp_path)
        got = again.get("age", 4, 0, 0)
    assert again.pairs_read == 4 and torch.allclose(got.positive[1], first.positive[1])
    assert not [w for w in seen if "pickle protocol" in str(w.message)]


@needs_data
def test_a_set_is_read_only_as_deep_as_asked_and_deepened_to_the_bits_of_one_full_read(tiny, tmp_path: Path) -> None:
    lazy = ActivationCache(tiny, (0, 1, 3), disk_dir=tmp_path / "lazy")
    shallow = lazy.get("age", 4, 1, 0, layers=[1])
    lazy.get("age", 9, 1, 0, layers=[0])  # grown at the depth already read
    assert shallow.layers == (0, 1) and lazy.layer_reads == 4 * 2 + 5 * 2  # pairs x blocks run (stop after block 1)
    deep = lazy.get("age", 9, 1, 0, layers=[3])  # every earlier read again, now through block 3
    assert lazy.layer_reads == 4 * 2 + 5 * 2 + (4 + 5) * 4 and deep.layers == (0, 1, 3)
    eager = ActivationCache(tiny, (0, 1, 3))  # the same requests, every set read at every layer at once
    eager.get("age", 4, 1, 0)
    full = eager.get("age", 9, 1, 0)
    for layer in (0, 1, 3):
        assert torch.equal(deep.positive[layer], full.positive[layer]) and torch.equal(
            deep.negative[layer], full.negative[layer]
        )
    assert torch.equal(shallow.positive[1], full.positive[1][:4])
    assert lazy.get("age", 9, 1, 0, layers=[3]) is not None and lazy.hits == 1


@needs_data
def test_a_shallow_file_loaded_for_fewer_pairs_is_deepened_over_its_original_reads(tiny, tmp_path: Path) -> None:
    ActivationCache(tiny, (1, 3), disk_dir=tmp_path).get(
        "age", 9, 0, 0, layers=[1]
    )  # one read of 9 pairs, through block 1
    later = ActivationCache(tiny, (1, 3), disk_dir=tmp_path)
    assert later.get("age", 4, 0, 0, layers=[1]).layers == (1,) and later.pairs_read == 0
    deep = later.get("age", 4, 0, 0, layers=[3])
    assert later.pairs_read == 9  # the original read of 9 pairs again, not 4 on their own
    full = pair_activations(tiny, persona_pairs("age", 9, 0, 0, tokenizer=tiny.tokenizer), (1, 3))
    assert all(
        torch.equal(deep.positive[k], full.positive[k][:4]) and torch.equal(deep.negative[k], full.negative[k][:4])
        for k in (1, 3)
    )


def test_a_layer_outside_the_cache_is_refused_by_name(tiny) -> None:
    import pytest

    from lens_steer.errors import StudyError

    with pytest.raises(StudyError, match=r"layers \[2\] were asked for"):
        ActivationCache(tiny, (1, 3)).get("age", 4, 0, 0, layers=[2])
