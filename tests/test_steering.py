"""Tests for lens_steer.steering.hooks: what the hooks add, where, when, and that they leave cleanly.

Every steered value is compared with a reference computed without lens_steer: plain TransformerLens
hooks written here, or a greedy generation loop written here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _one_line import assert_one_line_error
from _tiny_models import BACKENDS, bridge_only, hook_counts, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.model.load import model_identity
from lens_steer.steering.hooks import steer
from lens_steer.steering.vectors import HOOK_KINDS, SteeringVector, VectorMetadata, sum_vectors

TEXT = "The quick brown fox"
N_NEW = 5
ATOL = 1e-4


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny(request.param)


def make_vector(
    model: Any, layers: list[int], *, hook: str = "hook_resid_post", seed: int = 1, scale: float = 4.0
) -> SteeringVector:
    ident = model_identity(model)
    gen = torch.Generator().manual_seed(seed)
    dirs = {layer: scale * torch.randn(ident.d_model, generator=gen) for layer in layers}
    meta = VectorMetadata(model_name=ident.name, d_model=ident.d_model, hook=hook, processing=ident.processing)
    return SteeringVector(dirs, meta)


def all_names(model: Any) -> list[str]:
    return [f"blocks.{layer}.{kind}" for layer in range(model.cfg.n_layers) for kind in HOOK_KINDS]


def cache_of(model: Any, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    names = all_names(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n].clone() for n in names}


# computation order inside a block, for "nothing before the steered point changes"
ORDER = ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]


@pytest.mark.parametrize("hook", ["hook_resid_post", "hook_resid_pre", "hook_mlp_out"])
def test_adds_exactly_coeff_v_at_the_named_point_and_nowhere_before(model: Any, hook: str) -> None:
    layer, coeff = 1, 2.5
    vec = make_vector(model, [layer], hook=hook)
    tokens = model.to_tokens(TEXT)
    base = cache_of(model, tokens)
    with steer(model, [(vec, coeff)]):
        steered = cache_of(model, tokens)
    target = f"blocks.{layer}.{hook}"
    expected = coeff * vec.directions[layer]
    diff = steered[target] - base[target]
    assert diff.shape == base[target].shape
    torch.testing.assert_close(diff, expected.expand_as(diff), atol=ATOL, rtol=0)
    for name in all_names(model):
        blk, kind = int(name.split(".")[1]), name.split(".")[2]
        upstream = blk < layer or (blk == layer and ORDER.index(kind) < ORDER.index(hook))
        if upstream:
            assert torch.equal(steered[name], base[name]), name
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    assert not torch.allclose(steered[last], base[last], atol=1e-3)  # the change does propagate downstream


def test_forward_position_modes_with_prompt_length(model: Any) -> None:
    layer, coeff, split = 2, 1.5, 4
    vec = make_vector(model, [layer])
    tokens = model.to_tokens(TEXT)
    name = f"blocks.{layer}.hook_resid_post"
    base = cache_of(model, tokens)[name]
    delta = coeff * vec.directions[layer]
    pos = torch.arange(tokens.shape[1])
    expect = {
        "all": torch.ones_like(pos, dtype=torch.bool),
        "prompt": pos < split,
        "generated": pos >= split,
    }
    for mode, mask in expect.items():
        with steer(model, [(vec, coeff)], positions=mode, prompt_length=split):
            got = cache_of(model, tokens)[name]
        torch.testing.assert_close(got - base, mask[None, :, None].float() * delta, atol=ATOL, rtol=0)
    # without prompt_length a single forward pass is all prompt
    with steer(model, [(vec, coeff)], positions="generated"):
        assert torch.equal(cache_of(model, tokens)[name], base)
    with steer(model, [(vec, coeff)], positions="prompt"):
        torch.testing.assert_close(cache_of(model, tokens)[name] - base, delta.expand_as(base), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["prompt", "generated"])
def test_a_new_prompt_one_token_longer_is_a_prompt_not_a_continuation(model: Any, mode: str) -> None:
    layer, coeff = 2, 1.5
    vec = make_vector(model, [layer])
    name = f"blocks.{layer}.hook_resid_post"
    first = model.to_tokens(TEXT)
    other = model.to_tokens("A lazy dog sleeps under the tree")[
        :, : first.shape[1] + 1
    ]  # another text, one token longer
    assert other.shape[1] == first.shape[1] + 1 and not torch.equal(other[:, : first.shape[1]], first)
    base = cache_of(model, other)[name]
    delta = coeff * vec.directions[layer]
    with steer(model, [(vec, coeff)], positions=mode):
        cache_of(model, first)
        got = cache_of(model, other)[name]  # every position of a new prompt is a prompt position
    expected = delta.expand_as(base) if mode == "prompt" else torch.zeros_like(base)
    torch.testing.assert_close(got - base, expected, atol=ATOL, rtol=0)
    # the same text re-fed one token longer (generation without a KV cache) is still a continuation
    longer = torch.cat([first, other[:, :1]], dim=1)
    base_longer = cache_of(model, longer)[name]
    with steer(model, [(vec, coeff)], positions=mode):
        cache_of(model, first)
        got = cache_of(model, longer)[name]
    generated = torch.arange(longer.shape[1]) >= first.shape[1]
    mask = generated if mode == "generated" else ~generated
    torch.testing.assert_close(got - base_longer, mask[None, :, None].float() * delta, atol=ATOL, rtol=0)


def _recorder(store: list[torch.Tensor]) -> Callable[..., None]:
    def rec(tensor: torch.Tensor, *, hook: Any) -> None:
        store.append(tensor[:, -1].detach().clone())

    return rec


def reference_greedy(
    model: Any, tokens: torch.Tensor, delta: torch.Tensor | None, layer: int, mode: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding by full forward passes, adding `delta` by hand at the positions `mode` selects."""
    prompt_len = tokens.shape[1]
    record_at = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    records: list[torch.Tensor] = []

    def add(tensor: torch.Tensor, *, hook: Any) -> torch.Tensor:
        pos = torch.arange(tensor.shape[1])
        sel = {"all": pos >= 0, "prompt": pos < prompt_len, "generated": pos >= prompt_len}[mode]
        return tensor + sel[None, :, None].float() * delta

    seq = tokens
    for _ in range(N_NEW):
        hooks = [(record_at, _recorder(records))]
        if delta is not None:
            hooks.insert(0, (f"blocks.{layer}.hook_resid_post", add))
        with torch.no_grad():
            logits = model.run_with_hooks(seq, fwd_hooks=hooks)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq, records


def steered_generate(
    model: Any, tokens: torch.Tensor, vec: SteeringVector | None, coeff: float, mode: str, kv: bool, **kwargs: Any
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    records: list[torch.Tensor] = []
    record_at = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad(), model.hooks(fwd_hooks=[(record_at, _recorder(records))]):
        if vec is None:
            out = model.generate(
                tokens,
                max_new_tokens=N_NEW,
                do_sample=False,
                use_past_kv_cache=kv,
                verbose=False,
                stop_at_eos=False,
                **kwargs,
            )
        else:
            with steer(model, [(vec, coeff)], positions=mode):
                out = model.generate(
                    tokens,
                    max_new_tokens=N_NEW,
                    do_sample=False,
                    use_past_kv_cache=kv,
                    verbose=False,
                    stop_at_eos=False,
                    **kwargs,
                )
    return out, records


@pytest.mark.parametrize("kv", [True, False], ids=["kv", "no_kv"])
@pytest.mark.parametrize("mode", ["all", "prompt", "generated"])
def test_generate_position_modes_match_a_hand_written_loop(model: Any, mode: str, kv: bool) -> None:
    layer, coeff = 1, 3.0
    vec = make_vector(model, [layer])
    tokens = model.to_tokens(TEXT)
    got_seq, got_rec = steered_generate(model, tokens, vec, coeff, mode, kv)
    ref_seq, ref_rec = reference_greedy(model, tokens, coeff * vec.directions[layer], layer, mode)
    _, plain_rec = reference_greedy(model, tokens, None, layer, mode)
    assert torch.equal(got_seq, ref_seq)
    assert len(got_rec) == len(ref_rec) == N_NEW
    for g, r in zip(got_rec, ref_rec):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=0)
    # the mode mattered: steered steps differ from unsteered ones exactly where the mode says
    changed = [not torch.allclose(r, p, atol=1e-3) for r, p in zip(ref_rec, plain_rec)]
    if mode == "generated":
        assert changed[0] is False and all(changed[1:])
    else:
        assert all(changed[:1])


@pytest.mark.parametrize("mode", ["all", "prompt", "generated"])
def test_steered_greedy_generation_same_with_and_without_kv_cache(model: Any, mode: str) -> None:
    vec = make_vector(model, [1, 2], seed=3)
    tokens = model.to_tokens(TEXT)
    with_kv, rec_kv = steered_generate(model, tokens, vec, 2.0, mode, True)
    without, rec_no = steered_generate(model, tokens, vec, 2.0, mode, False)
    assert torch.equal(with_kv, without)
    for a, b in zip(rec_kv, rec_no):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    plain_kv, _ = steered_generate(model, tokens, None, 0.0, mode, True)
    plain_no, _ = steered_generate(model, tokens, None, 0.0, mode, False)
    assert torch.equal(plain_kv, plain_no)


@bridge_only
@pytest.mark.parametrize("kv", [True, False], ids=["kv", "no_kv"])
@pytest.mark.parametrize("mode", ["all", "prompt", "generated"])
def test_left_padded_batch_generation_equals_one_prompt_at_a_time(model: Any, mode: str, kv: bool) -> None:
    from lens_steer.model.tokens import encode_texts, pad_batch, pad_id

    if not hasattr(model, "boot_transformers"):
        pytest.skip("batched padded generate() with attention_mask is a TransformerBridge feature")
    texts = ["Hi", "The quick brown fox jumps", "A cat"]
    vec = make_vector(model, [1], seed=5)
    batch = pad_batch(encode_texts(model, texts), pad_id=pad_id(model), padding_side="left")
    got, rec = steered_generate(model, batch.tokens, vec, 3.0, mode, kv, attention_mask=batch.attention_mask)
    width = batch.tokens.shape[1]
    for i, text in enumerate(texts):
        single, single_rec = steered_generate(model, model.to_tokens(text), vec, 3.0, mode, kv)
        assert torch.equal(got[i, width:], single[0, -N_NEW:]), text
        for b, s in zip(rec, single_rec):
            torch.testing.assert_close(b[i], s[0], atol=ATOL, rtol=0)


def test_hooks_removed_on_exit_and_after_an_exception(model: Any) -> None:
    vec = make_vector(model, [0, 3])
    before = hook_counts(model)
    with steer(model, [(vec, 1.0)]):
        during = hook_counts(model)
    assert hook_counts(model) == before
    assert sum(during.values()) == sum(before.values()) + 2
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, [(vec, 1.0)]):
            raise RuntimeError("boom")
    assert hook_counts(model) == before
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        base = model(tokens)
        with steer(model, [(vec, 1.0)]):
            pass
        assert torch.equal(model(tokens), base)  # nothing left that changes the output


def test_hooks_added_by_others_stay(model: Any) -> None:
    vec = make_vector(model, [1])
    hp = model.hook_dict["blocks.1.hook_resid_post"]
    calls: list[str] = []
    hp.add_hook(lambda t, hook: calls.append("direct"), dir="fwd")
    try:
        tokens = model.to_tokens(TEXT)
        with (
            torch.no_grad(),
            model.hooks(fwd_hooks=[("blocks.2.hook_resid_post", lambda t, hook: calls.append("outer"))]),
        ):
            with steer(model, [(vec, 1.0)]):
                model(tokens)
            n_direct = len(hp.fwd_hooks)
            calls.clear()
            model(tokens)
            assert sorted(calls) == ["direct", "outer"]
        assert n_direct == 1
        calls.clear()
        with torch.no_grad():
            model(tokens)
        assert calls == ["direct"]
    finally:
        hp.remove_hooks("fwd")
    assert len(hp.fwd_hooks) == 0


def test_several_vectors_at_once_equal_their_sum_and_a_hand_hook(model: Any) -> None:
    v1 = make_vector(model, [1, 2], seed=11)
    v2 = make_vector(model, [2, 3], seed=12)
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        with steer(model, [(v1, 1.5), (v2, -0.5)]):
            both = model(tokens)
        with steer(model, [(sum_vectors([v1 * 1.5, v2 * -0.5]), 1.0)]):
            summed = model(tokens)
        with steer(model, [(v1, 1.5)]), steer(model, [(v2, -0.5)]):
            nested = model(tokens)
        deltas = {
            1: 1.5 * v1.directions[1],
            2: 1.5 * v1.directions[2] - 0.5 * v2.directions[2],
            3: -0.5 * v2.directions[3],
        }
        hand = model.run_with_hooks(
            tokens,
            fwd_hooks=[(f"blocks.{layer}.hook_resid_post", lambda t, hook, d=d: t + d) for layer, d in deltas.items()],
        )
        plain = model(tokens)
    torch.testing.assert_close(both, hand, atol=ATOL, rtol=0)
    torch.testing.assert_close(summed, hand, atol=ATOL, rtol=0)
    torch.testing.assert_close(nested, hand, atol=ATOL, rtol=0)
    assert not torch.allclose(plain, hand, atol=1e-3)


def test_apply_is_steer(model: Any) -> None:
    vec = make_vector(model, [2])
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        with vec.apply(model, coeff=-2.0):
            a = model(tokens)
        b = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.2.hook_resid_post", lambda t, hook: t - 2.0 * vec.directions[2])]
        )
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def _enter(model: Any, vectors: Any, **kw: Any) -> None:
    with steer(model, vectors, **kw):
        pass


def test_refusals_are_one_line(model: Any) -> None:
    vec = make_vector(model, [1])
    before = hook_counts(model)
    assert_one_line_error(lambda: _enter(model, [(vec, 1.0)], positions="middle"), "'middle'", "generated")
    assert_one_line_error(lambda: _enter(model, []), "at least one")
    assert_one_line_error(lambda: _enter(model, [(vec, float("nan"))]), "nan")
    ident = model_identity(model)
    other = SteeringVector(
        {1: torch.ones(ident.d_model)}, VectorMetadata(model_name="other-model", d_model=ident.d_model)
    )
    assert_one_line_error(lambda: _enter(model, [(other, 1.0)]), "'other-model'")
    deep = SteeringVector(
        {ident.n_layers: torch.ones(ident.d_model)}, VectorMetadata(model_name=ident.name, d_model=ident.d_model)
    )
    assert_one_line_error(lambda: _enter(model, [(deep, 1.0)]), str(ident.n_layers), f"0..{ident.n_layers - 1}")
    assert_one_line_error(lambda: _enter(model, [(vec, 1.0), (other, 1.0)]), "'other-model'")
    assert hook_counts(model) == before  # a refused vector leaves no hook behind
