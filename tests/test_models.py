"""Tests for lens_steer.model.load: the tiny model, identity, checks, cache folder, and the bridge against plain HF."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_models import BACKENDS, bridge_only, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.errors import LensSteerError, ModelError
from lens_steer.model import load as models
from lens_steer.model.load import PROCESSING_FLAGS, check_hook_name, check_layers, iter_hook_names, model_identity


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny(request.param)


def test_tiny_model_identity(model: Any) -> None:
    ident = model_identity(model)
    assert ident.name == models.TINY_MODEL
    assert (ident.n_layers, ident.d_model) == (4, 64)
    assert ident.processing == {f: False for f in PROCESSING_FLAGS}
    assert isinstance(model, models.HookedModel)
    logits = model(model.to_tokens("hello"))
    assert logits.shape == (1, 6, len(model.tokenizer))


def test_seed_fixes_the_weights() -> None:
    backend = BACKENDS[0]
    a, b, c = make_tiny(backend, seed=1), make_tiny(backend, seed=1), make_tiny(backend, seed=2)
    tokens = a.to_tokens("same input")
    with torch.no_grad():
        la, lb, lc = a(tokens), b(tokens), c(tokens)
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)


def test_check_layers_and_hook_names(model: Any) -> None:
    check_layers(model, [0, 3])
    for bad, needle in (([4], "layer 4"), ([-1], "layer -1"), ([], "no layers"), ([1.0], "1.0")):
        with pytest.raises(ModelError) as e:
            check_layers(model, bad)
        assert needle in str(e.value) and "\n" not in str(e.value)
    check_hook_name(model, "blocks.3.hook_resid_post")
    with pytest.raises(ModelError) as e:
        check_hook_name(model, "blocks.9.hook_resid_post")
    assert "'blocks.9.hook_resid_post'" in str(e.value) and "lens-steer info" in str(e.value)


def test_iter_hook_names_lists_each_block(model: Any) -> None:
    names = list(iter_hook_names(model, ("hook_resid_pre", "hook_resid_post")))
    assert names == [f"blocks.{layer}.{k}" for layer in range(4) for k in ("hook_resid_pre", "hook_resid_post")]
    assert all(n in model.hook_dict for n in names)


def test_unknown_model_name_is_one_line() -> None:
    with pytest.raises(ModelError) as e:
        models.load_model("no-such-model")
    msg = str(e.value)
    assert "'no-such-model'" in msg and models.EMBEDDED_MODEL in msg and "\n" not in msg


def test_missing_package_message() -> None:
    with pytest.raises(ModelError) as e:
        models.package_file("lens_steer_no_such_package", "x.gguf", install_hint="pip install it")
    assert "'lens_steer_no_such_package'" in str(e.value) and "pip install it" in str(e.value)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LENS_STEER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "lens_steer"
    monkeypatch.setenv("LENS_STEER_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LENS_STEER_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "lens_steer"


@bridge_only
def test_wrapped_hf_model_matches_plain_hf_hidden_states() -> None:
    """The bridge's resid_post at block L equals HF's hidden_states[L + 1] (pre final norm for L < last)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = models.tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )
    hf = LlamaForCausalLM(config).eval()
    ids = torch.tensor([[tok.bos_token_id, *tok("some words", add_special_tokens=False)["input_ids"]]])
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
    hidden = [h.clone() for h in out.hidden_states]
    ref_logits = out.logits.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = models.wrap_hf_model(hf, tok, name="my-tiny")
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids)
    assert model_identity(bridge).name == "my-tiny"
    for layer in range(2):  # HF's last hidden state is after the final norm
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in bridge.parameters())


@bridge_only
def test_process_weights_is_recorded() -> None:
    m = make_tiny("bridge", process_weights=True)
    assert model_identity(m).processing == {f: True for f in PROCESSING_FLAGS}


def test_library_errors_are_value_errors() -> None:
    assert issubclass(ModelError, LensSteerError) and issubclass(LensSteerError, ValueError)
