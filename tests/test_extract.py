"""Tests for lens_steer.extract.activations: activations against run_with_cache, aggregators against numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _tiny_models import BACKENDS, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import (
    extract_vector,
    last_token_activations,
    mean_diff,
    pair_activations,
    pca_center,
    pca_diff,
    vector_from_activations,
)
from lens_steer.forward.shared_prefix import MIN_SHARED_PREFIX, common_prefix_length
from lens_steer.model.load import accepts_kv_cache, model_identity
from lens_steer.model.tokens import encode_texts

TEXTS = ["Hi", "The quick brown fox jumps over", "A cat sat", "Colourless green ideas sleep furiously", "x"]
PAIRS = [
    ("I love this film", "I hate this film"),
    ("What a kind and generous person", "What a cruel person"),
    ("Good", "Bad"),
    ("The weather is lovely today", "The weather is awful today"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny(request.param)


def cached_last(model: Any, text: str, layer: int, hook: str = "hook_resid_post") -> torch.Tensor:
    """The activation at the last token of `text` alone, from run_with_cache."""
    name = f"blocks.{layer}.{hook}"
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=lambda n: n == name)
    return cache[name][0, -1].float()


# ---- reading activations ------------------------------------------------------------------------
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("hook", ["hook_resid_post", "hook_resid_mid"])
def test_batched_last_token_equals_one_text_at_a_time_and_run_with_cache(
    model: Any, padding_side: str, hook: str
) -> None:
    layers = [0, 2]
    batched = last_token_activations(model, TEXTS, layers, hook=hook, padding_side=padding_side, max_batch=16)
    single = last_token_activations(model, TEXTS, layers, hook=hook, padding_side=padding_side, max_batch=1)
    for layer in layers:
        assert batched[layer].shape == (len(TEXTS), model.cfg.d_model)
        expected = torch.stack([cached_last(model, t, layer, hook) for t in TEXTS])
        torch.testing.assert_close(single[layer], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched[layer], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("hook", ["hook_resid_post", "hook_resid_pre"])
def test_a_shared_prefix_runs_once_and_gives_run_with_cache_values(model: Any, hook: str) -> None:
    system = "You are a careful assistant who answers every question about animals briefly. "
    texts = [system + t for t in TEXTS]
    shared = common_prefix_length(encode_texts(model, texts))
    assert shared >= MIN_SHARED_PREFIX
    calls: list[int] = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: calls.append(t.shape[1]))]):
        acts = last_token_activations(model, texts, [1, 3], hook=hook, max_batch=2)
    if accepts_kv_cache(model):  # one pass over the prefix, then only each text's own tokens
        assert calls[0] == shared and max(calls[1:]) == max(len(r) for r in encode_texts(model, texts)) - shared
    for layer in (1, 3):
        expected = torch.stack([cached_last(model, t, layer, hook) for t in texts])
        torch.testing.assert_close(acts[layer], expected, atol=1e-4, rtol=0)


def test_forward_stops_after_the_highest_layer(model: Any) -> None:
    seen: list[str] = []
    top = model.cfg.n_layers - 1
    hooks = [
        (f"blocks.{layer}.hook_resid_post", lambda t, hook: seen.append(hook.name))
        for layer in range(model.cfg.n_layers)
    ]
    with model.hooks(fwd_hooks=hooks):
        last_token_activations(model, TEXTS[:2], [1])
    names = set(seen)
    assert any(".0." in n or ".1." in n for n in names)
    assert not any(f".{layer}." in n for n in names for layer in range(2, top + 1))


def test_progress_counts_every_text(model: Any) -> None:
    counted: list[int] = []
    last_token_activations(model, TEXTS, [1], max_batch=2, progress=counted.append)
    assert sum(counted) == len(TEXTS) and max(counted) <= 2


def test_pair_activations_split_sides(model: Any) -> None:
    acts = pair_activations(model, PAIRS, [1, 3])
    assert len(acts) == len(PAIRS) and acts.layers == (1, 3)
    for layer in (1, 3):
        pos = torch.stack([cached_last(model, p, layer) for p, _ in PAIRS])
        neg = torch.stack([cached_last(model, n, layer) for _, n in PAIRS])
        torch.testing.assert_close(acts.positive[layer], pos, atol=1e-4, rtol=0)
        torch.testing.assert_close(acts.negative[layer], neg, atol=1e-4, rtol=0)
    ident = model_identity(model)
    assert (acts.model_name, acts.d_model, dict(acts.processing)) == (ident.name, ident.d_model, dict(ident.processing))
    assert acts.provenance["n_pairs"] == len(PAIRS)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_extract_mean_diff_equals_hand_computed_from_run_with_cache(model: Any, padding_side: str) -> None:
    vec = extract_vector(model, PAIRS, [2], method="mean_diff", padding_side=padding_side)
    diffs = [cached_last(model, p, 2) - cached_last(model, n, 2) for p, n in PAIRS]
    expected = sum(diffs) / len(diffs)
    torch.testing.assert_close(vec.directions[2], expected, atol=1e-4, rtol=0)
    assert vec.metadata.method == "mean_diff" and vec.metadata.hook == "hook_resid_post"
    assert vec.metadata.model_name == model_identity(model).name


# ---- aggregators -------------------------------------------------------------------------------
def _rand(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_mean_diff_is_the_mean_of_differences() -> None:
    pos, neg = _rand(7, 5, 0)
    p, n = pos.tolist(), neg.tolist()
    hand = [sum(p[i][j] - n[i][j] for i in range(7)) / 7 for j in range(5)]
    assert mean_diff(pos, neg).tolist() == pytest.approx(hand, abs=1e-6)


def _numpy_pc1(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_diff_is_numpy_svd_of_centred_differences_up_to_sign(seed: int) -> None:
    pos, neg = _rand(12, 6, seed)
    got = pca_diff(pos, neg).numpy()
    ref = _numpy_pc1((pos - neg).numpy().astype(np.float64))
    assert abs(float(got @ ref)) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)
    proj = (pos - neg).numpy() @ got
    assert (proj > 0).sum() >= (proj < 0).sum()  # sign rule: positives project higher in most pairs


def test_pca_diff_sign_rule_on_a_known_case() -> None:
    # differences along e0 with a spread: centred PCA is +-e0; 4 of 5 pairs have pos above neg along +e0
    d = 4
    along = torch.tensor([3.0, 2.5, 2.0, 1.5, -1.0])
    noise = 0.01 * torch.randn(5, d, generator=torch.Generator().manual_seed(0))
    diffs = along[:, None] * torch.eye(d)[0] + noise
    neg = torch.randn(5, d, generator=torch.Generator().manual_seed(1))
    pos = neg + diffs
    got = pca_diff(pos, neg)
    assert float(got[0]) == pytest.approx(1.0, abs=1e-3)
    flipped = pca_diff(neg, pos)  # swapping sides must flip the direction
    torch.testing.assert_close(flipped, -got, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 3])
def test_pca_center_is_numpy_pca_of_pair_centred_sides(seed: int) -> None:
    pos, neg = _rand(9, 5, seed)
    pos = pos + torch.tensor([2.0, 0, 0, 0, 0])  # a shared offset so the direction is well defined
    got = pca_center(pos, neg).numpy()
    p, n = pos.numpy().astype(np.float64), neg.numpy().astype(np.float64)
    centre = (p + n) / 2
    ref = _numpy_pc1(np.concatenate([p - centre, n - centre]))
    assert abs(float(got @ ref)) == pytest.approx(1.0, abs=1e-5)
    # the same by the math: it is the top right-singular vector of the raw (uncentred) differences
    _, _, vt = np.linalg.svd(p - n, full_matrices=False)
    assert abs(float(got @ vt[0])) == pytest.approx(1.0, abs=1e-5)
    proj = (p - n) @ got
    assert (proj > 0).sum() >= (proj < 0).sum()


def test_vector_from_activations_applies_the_method_per_layer(model: Any) -> None:
    acts = pair_activations(model, PAIRS, [0, 3])
    vec = vector_from_activations(acts, "pca_diff", scale="raw")
    default = vector_from_activations(acts, "pca_diff")  # the one unit: the mean contrast at each layer
    assert vec.scale == "raw" and default.scale == "contrast"
    for layer in (0, 3):
        pos, neg = acts.positive[layer], acts.negative[layer]
        torch.testing.assert_close(vec.directions[layer], pca_diff(pos, neg))
        contrast = (pos.double() - neg.double()).mean(0).norm().float()
        torch.testing.assert_close(default.directions[layer], pca_diff(pos, neg) * contrast)
    only = vector_from_activations(acts, "mean_diff", layers=[3])
    assert only.layers == (3,)
    with pytest.raises(LensSteerError, match="layer 1 was not read"):
        vector_from_activations(acts, "mean_diff", layers=[1])


# ---- bad input -----------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_layer_out_of_range(model: Any) -> None:
    n = model.cfg.n_layers
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, PAIRS, [1, n], method="mean_diff")
    _one_line(e, str(n), f"0..{n - 1}")
    with pytest.raises(LensSteerError) as e:
        last_token_activations(model, TEXTS, [-1])
    _one_line(e, "-1")


def test_unknown_hook_and_method(model: Any) -> None:
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, PAIRS, [1], hook="hook_resid_middle")
    _one_line(e, "'hook_resid_middle'", "hook_resid_post")
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, PAIRS, [1], method="median")
    _one_line(e, "'median'", "pca_diff")


def test_empty_side_and_empty_input(model: Any) -> None:
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, [("fine", "   ")], [1])
    _one_line(e, "pair 0", "empty")
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, [], [1])
    _one_line(e, "no contrastive pairs")
    with pytest.raises(LensSteerError) as e:
        extract_vector(model, PAIRS[:1], [1], method="pca_diff")
    _one_line(e, "at least two", "mean_diff")


def test_vector_scales_unit_and_contrast_against_hand_computation() -> None:
    from lens_steer.extract.activations import PairActivations, vector_from_activations

    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    acts = PairActivations({3: pos}, {3: neg}, "hook_resid_post", "tiny-llama", 8, {}, {})
    raw = vector_from_activations(acts, "pca_diff", scale="raw").directions[3]
    unit = vector_from_activations(acts, "pca_diff", scale="unit").directions[3]
    contrast = vector_from_activations(acts, "pca_diff", scale="contrast").directions[3]
    mean_norm = float((pos - neg).mean(0).norm())
    assert float(unit.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(contrast.norm()) == pytest.approx(mean_norm, rel=1e-5)
    assert torch.allclose(contrast / mean_norm, raw / raw.norm(), atol=1e-6)
    md = vector_from_activations(acts, "mean_diff", scale="contrast").directions[3]
    assert torch.allclose(md, (pos - neg).mean(0), atol=1e-5)  # mean_diff is already at the contrast scale


def test_vector_provenance_records_the_bos_rule(model: Any) -> None:
    """The extraction's BOS choice is in the vector: the tokenizer's own default (the tiny one adds a BOS), or the
    override."""
    from lens_steer.model.load import tiny_tokenizer

    fresh = tiny_tokenizer()
    default_bos = fresh("a")["input_ids"][0] == fresh.bos_token_id
    vec = extract_vector(model, PAIRS, [1], method="mean_diff")
    assert vec.metadata.provenance["tokenization"] == {
        "bos_policy": "tokenizer-default",
        "bos_token": fresh.bos_token,
        "bos_on_plain_text": default_bos,
    }
    never = extract_vector(model, PAIRS, [1], method="mean_diff", prepend_bos=False)
    assert never.metadata.provenance["tokenization"]["bos_on_plain_text"] is False
