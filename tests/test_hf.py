"""steer_hf: a vanilla Hugging Face model steered with plain PyTorch hooks gives TransformerLens's logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _arch_checkpoints import FAMILIES, write_checkpoint
from _hf_pair import random_vector, tiny_pair
from _tiny_models import single_thread  # noqa: F401

from lens_steer.errors import LensSteerError
from lens_steer.steering.export import export_vector
from lens_steer.steering.hf import hf_hook_plan, steer_hf
from lens_steer.steering.hooks import steer

TOKENS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [40, 41, 42, 43, 44, 45, 46, 47]])
HOOKS = ("hook_resid_post", "hook_resid_pre", "hook_attn_out", "hook_mlp_out")


def hook_totals(model: Any) -> tuple[int, int]:
    """Forward hooks and forward pre-hooks on every module."""
    return sum(len(m._forward_hooks) for m in model.modules()), sum(len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("hook", HOOKS)
def test_steer_hf_equals_transformer_lens_steering(arch: str, hook: str) -> None:
    hf, bridge = tiny_pair(arch)
    n = int(bridge.cfg.n_layers)
    vector = random_vector(bridge, [0, n - 1], hook=hook, scale=3.0)
    with torch.inference_mode():
        base = bridge(TOKENS)
        with steer(bridge, [(vector, -2.0)]):
            expected = bridge(TOKENS)
        with steer_hf(hf, vector, -2.0):
            got = hf(TOKENS).logits
        after = hf(TOKENS).logits
    assert (expected - base).abs().max() > 0.1  # the steering changes the logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(after, base, atol=1e-4, rtol=0)  # and is gone after the block


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_steer_hf_equals_transformer_lens_in_every_supported_family(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lens_steer.model.load import load_model

    folder = write_checkpoint(family, tmp_path / family)
    bridge, hf = load_model(str(folder)), AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    with torch.inference_mode():
        base = bridge(tokens)
    for hook in HOOKS:
        vector = random_vector(bridge, [0, 3], hook=hook, scale=2.0)
        with torch.inference_mode():
            with steer(bridge, [(vector, 1.0)]):
                expected = bridge(tokens)
            with steer_hf(hf, vector, 1.0):
                got = hf(tokens).logits
        assert (expected - base).abs().max() > 0.1, hook
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0, msg=lambda m: f"{family} {hook}: {m}")


def test_hooks_are_removed_exactly_as_added_also_after_an_exception() -> None:
    hf, bridge = tiny_pair("llama")
    keep = hf.model.layers[1].register_forward_hook(lambda m, i, o: None)  # someone else's hook
    before = hook_totals(hf)
    vector = random_vector(bridge, [0, 2], hook="hook_resid_pre")
    with steer_hf(hf, vector, 1.0) as handles:
        assert len(handles) == 2 and hook_totals(hf) == (before[0], before[1] + 2)
    assert hook_totals(hf) == before
    with pytest.raises(RuntimeError), steer_hf(hf, random_vector(bridge, [1, 3]), 1.0):
        assert hook_totals(hf) == (before[0] + 2, before[1])
        raise RuntimeError("inside")
    assert hook_totals(hf) == before
    keep.remove()
    assert hook_totals(hf) == (0, 0)


def test_steer_hf_reads_exported_files(tmp_path: Path) -> None:
    hf, bridge = tiny_pair("llama")
    vector = random_vector(bridge, [1, 2], scale=3.0)
    with torch.inference_mode(), steer_hf(hf, vector, 1.5):
        expected = hf(TOKENS).logits
    for fmt, name in (("hf", "v.safetensors"), ("gguf", "v.gguf"), ("lm-eval", "v.pt")):
        path = export_vector(vector, fmt, 1.5, tmp_path / name)
        with torch.inference_mode(), steer_hf(hf, path, 1.0):
            got = hf(TOKENS).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_steer_hf_refusals_are_one_line() -> None:
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    hf, bridge = tiny_pair("llama")
    gpt2_hf, processed = tiny_pair("gpt2", process_weights=True)
    cases = [
        (hf, SteeringVector({4: torch.ones(64)}, VectorMetadata("tiny-llama", 64)), ["layer 4", "0..3"]),
        (hf, random_vector(bridge, [1], hook="hook_resid_mid"), ["hook_resid_mid"]),
        (gpt2_hf, random_vector(processed, [1]), ["LayerNorm", "process_weights=False"]),
    ]
    for model, vector, needles in cases:
        with pytest.raises(LensSteerError) as e:
            hf_hook_plan(model, vector, 1.0)
        assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)
    with pytest.raises(LensSteerError, match="finite"):
        hf_hook_plan(hf, random_vector(bridge, [1]), float("inf"))
    narrow = random_vector(bridge, [1])
    wide = SteeringVector({1: torch.ones(65)}, VectorMetadata("tiny-llama", 65))
    with pytest.raises(LensSteerError, match="width 65.*hidden_size 64"):
        hf_hook_plan(hf, wide, 1.0)
    with pytest.raises(LensSteerError, match="'bert'"):
        hf_hook_plan(hf, narrow, 1.0, arch="bert")
    assert hook_totals(hf) == (0, 0)


@pytest.mark.integration
def test_steer_hf_equals_transformer_lens_on_the_embedded_model() -> None:
    from transformers import AutoModelForCausalLM

    from lens_steer.model.load import EMBEDDED_MODEL, checkpoint_folder, load_model

    bridge = load_model()
    hf = AutoModelForCausalLM.from_pretrained(checkpoint_folder(EMBEDDED_MODEL), dtype=torch.float32).eval()
    tokens = torch.tensor([bridge.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    for hook, layers in (("hook_resid_post", [10, 20]), ("hook_resid_pre", [0, 15])):
        vector = random_vector(bridge, layers, hook=hook, scale=4.0)
        with torch.inference_mode():
            with steer(bridge, [(vector, 1.0)]):
                expected = bridge(tokens)
            with steer_hf(hf, vector, 1.0):
                got = hf(tokens).logits
        assert (expected - bridge(tokens)).abs().max() > 0.1
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
