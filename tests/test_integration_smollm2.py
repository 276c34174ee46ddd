"""Integration tests on the embedded SmolLM2-135M-Instruct, checked against the plain Hugging Face model.

The HF model is loaded separately from the same safetensors cache; steering on it is an ordinary
torch forward hook written here, so nothing of lens_steer or TransformerLens is in the reference.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from _hf_pair import hooked_logits
from _tiny_models import single_thread  # noqa: F401 (autouse fixture: one torch thread)

pytestmark = pytest.mark.integration

PAIRS = [
    ("I think everyone deserves respect, whatever their age.", "I think old people are useless."),
    ("People of every background can be good engineers.", "Only some races make good engineers."),
    ("She is a capable leader.", "Women cannot lead."),
    ("Anyone can learn to code at any age.", "Older workers never learn new tools."),
]
PROMPT = "The capital of France is"
LAYERS = (10, 20)


@pytest.fixture(scope="module")
def models() -> Iterator[tuple[Any, Any]]:
    """(TransformerLens model from load_model(), an independent HF model from the same cache folder)."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        from lens_steer.model.load import ModelError, embedded_smollm2_folder, load_model

        try:
            folder = embedded_smollm2_folder()
        except ModelError as e:
            pytest.skip(f"missing weights: embedded SmolLM2 not installed: {e}")
        from transformers import AutoModelForCausalLM

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model()
            hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        yield model, hf
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def random_vector(model: Any, layers: tuple[int, ...], scale: float) -> Any:
    from lens_steer.model.load import model_identity
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    ident = model_identity(model)
    g = torch.Generator().manual_seed(0)
    dirs = {
        layer: torch.nn.functional.normalize(torch.randn(ident.d_model, generator=g), dim=0) * scale for layer in layers
    }
    return SteeringVector(
        dirs, VectorMetadata(model_name=ident.name, d_model=ident.d_model, processing=ident.processing)
    )


def test_loads_offline_and_answers_paris(models: tuple[Any, Any]) -> None:
    from lens_steer.model.load import EMBEDDED_MODEL, model_identity

    model, _ = models
    ident = model_identity(model)
    assert (ident.name, ident.n_layers, ident.d_model) == (EMBEDDED_MODEL, 30, 576)
    with torch.no_grad():
        logits = model(model.to_tokens(PROMPT))
    assert model.tokenizer.decode(int(logits[0, -1].argmax())) == " Paris"


def test_resid_post_equals_hf_hidden_states(models: tuple[Any, Any]) -> None:
    model, hf = models
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    for layer in (0, 5, 15, 28):
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1], atol=1e-4, rtol=1e-4)


def test_steered_logits_equal_a_plain_torch_hook_on_hf(models: tuple[Any, Any]) -> None:
    from lens_steer.steering.hooks import steer

    model, hf = models
    vec = random_vector(model, LAYERS, scale=8.0)
    coeff = 1.5
    tokens = model.to_tokens(PROMPT)

    def adder(delta: torch.Tensor) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (output[0] + delta, *output[1:])
            return output + delta

        return hook

    ref = hooked_logits(
        hf,
        tokens,
        [hf.model.layers[layer].register_forward_hook(adder(coeff * vec.directions[layer])) for layer in LAYERS],
    )
    with torch.no_grad():
        plain = hf(tokens).logits
        with steer(model, [(vec, coeff)]):
            got = model(tokens)
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-4)
    assert (ref - plain).abs().max() > 0.1  # the vector is big enough to matter


def test_greedy_generation_same_with_and_without_kv_cache(models: tuple[Any, Any]) -> None:
    from lens_steer.steering.hooks import steer

    model, _ = models
    tokens = model.to_tokens(PROMPT)
    vec = random_vector(model, (15,), scale=20.0)

    def gen(kv: bool) -> torch.Tensor:
        with torch.no_grad():
            return model.generate(
                tokens, max_new_tokens=8, do_sample=False, use_past_kv_cache=kv, verbose=False, stop_at_eos=False
            )

    plain_kv, plain_full = gen(True), gen(False)
    assert torch.equal(plain_kv, plain_full)
    for mode in ("all", "generated"):
        with steer(model, [(vec, 1.0)], positions=mode):
            steered_kv = gen(True)
        with steer(model, [(vec, 1.0)], positions=mode):
            steered_full = gen(False)
        assert torch.equal(steered_kv, steered_full), mode
        assert not torch.equal(steered_kv, plain_kv), mode  # steering changed the continuation


def test_batched_left_padded_extraction_equals_one_pair_at_a_time_and_hf(models: tuple[Any, Any]) -> None:
    from lens_steer.extract.activations import extract_vector, pair_activations

    model, hf = models
    batched = pair_activations(model, PAIRS, LAYERS, padding_side="left", max_batch=8)
    single = pair_activations(model, PAIRS, LAYERS, padding_side="right", max_batch=1)
    for layer in LAYERS:
        torch.testing.assert_close(batched.positive[layer], single.positive[layer], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.negative[layer], single.negative[layer], atol=1e-4, rtol=1e-4)
    vec = extract_vector(model, PAIRS, LAYERS, method="mean_diff", padding_side="left", max_batch=8)

    from transformers import AutoTokenizer

    from lens_steer.model.load import EMBEDDED_MODEL, checkpoint_folder

    fresh = AutoTokenizer.from_pretrained(
        str(checkpoint_folder(EMBEDDED_MODEL))
    )  # the checkpoint's own default encoding (no BOS for plain text)

    def hf_last(text: str) -> tuple[torch.Tensor, ...]:
        ids = torch.tensor([fresh(text)["input_ids"]])
        with torch.no_grad():
            return tuple(h[0, -1] for h in hf(ids, output_hidden_states=True).hidden_states)

    hidden = [(hf_last(p), hf_last(n)) for p, n in PAIRS]
    for layer in LAYERS:
        expected = torch.stack([hp[layer + 1] - hn[layer + 1] for hp, hn in hidden]).mean(0)
        torch.testing.assert_close(vec.directions[layer], expected, atol=1e-4, rtol=1e-4)
