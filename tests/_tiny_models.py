"""Tiny random models for the unit tests, on every TransformerLens model class this install offers.

"bridge": `load_model("tiny-llama")` (TL 4.x, and TL 3.6+ which ship TransformerBridge too).
"hooked": TL 3.x `HookedTransformer(HookedTransformerConfig(...))` (absent on TL 4.x).
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import pytest
import torch

from lens_steer.model import load as models


def _has_bridge() -> bool:
    try:
        return importlib.util.find_spec("transformer_lens.model_bridge") is not None
    except ModuleNotFoundError:
        return False


def _has_hooked() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


HAS_BRIDGE = _has_bridge()
HAS_HOOKED = _has_hooked()
BACKENDS = [name for name, ok in (("bridge", HAS_BRIDGE), ("hooked", HAS_HOOKED)) if ok]
bridge_only = pytest.mark.skipif(not HAS_BRIDGE, reason="needs transformer_lens.model_bridge (TransformerBridge)")


def quiet_tiny_llama(seed: int = 0, process_weights: bool = False) -> Any:
    """`load_model("tiny-llama", seed=seed)` with its load warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.load_model(models.TINY_MODEL, seed=seed, process_weights=process_weights)


def make_tiny(backend: str, seed: int = 0, process_weights: bool = False) -> Any:
    """A tiny random model of the given backend (weights fixed by `seed`)."""
    if backend == "bridge":
        return quiet_tiny_llama(seed, process_weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return models.tiny_hooked_transformer(models.tiny_tokenizer(), device="cpu", dtype=torch.float32)
        finally:
            torch.random.set_rng_state(state)


def hook_counts(model: Any) -> dict[str, int]:
    """Number of forward hooks on every hook point (aliases collapsed)."""
    out: dict[str, int] = {}
    for name, hp in model.hook_dict.items():
        out.setdefault(str(id(hp)), len(hp.fwd_hooks))
    return out


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Any:
    """One torch thread while a test module runs: on a busy 2-core machine two OpenMP threads run ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_llama_folder(folder: Any, seed: int = 0) -> Any:
    """The "tiny-llama" model and tokenizer saved as a Hugging Face checkpoint folder (loadable by path)."""
    from pathlib import Path

    hf_model, tokenizer = models.tiny_hf_model(seed)
    folder = Path(folder)
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def kv_cache_tiny_llama() -> Any:
    """The tiny Llama (seed 3) for tests of Hugging Face KV-cache paths; skips where the model takes no such cache."""
    m = models.load_model("tiny-llama", seed=3)
    if not models.accepts_kv_cache(m):
        pytest.skip("Hugging Face KV caches are a TransformerBridge feature")
    return m


def block1_steering(model: Any, steered: bool) -> Any:
    """A seeded random vector (norm ~4 sqrt(d)) steering block 1 of a tiny model, or a no-op when not `steered`."""
    from contextlib import nullcontext

    from lens_steer.steering.hooks import steer
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    if not steered:
        return nullcontext()
    g = torch.Generator().manual_seed(7)
    d = int(model.cfg.d_model)
    vec = SteeringVector(
        {1: torch.randn(d, generator=g) * 4},
        VectorMetadata("tiny-llama", d, processing={f: False for f in models.PROCESSING_FLAGS}),
    )
    return steer(model, [(vec, 1.0)])
