"""lens_steer.model.fingerprint: the one fingerprint of a model, and every cache keyed by a model (the prediction
store, the pipeline's stage files, the search's activation cache, the fine-tuning baseline) following it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from _study_fixtures import needs_data

from lens_steer.extract.activation_cache import ActivationCache
from lens_steer.methods.baselines.finetune import LoraRecipe, finetune_key
from lens_steer.model.fingerprint import model_fingerprint, model_key
from lens_steer.model.load import load_model, model_identity
from lens_steer.pipeline.stage_cache import model_inputs
from lens_steer.tasks.store import prediction_settings


def quiet(**kwargs: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("tiny-llama", **kwargs)  # type: ignore[arg-type]


def nudged(model: object) -> object:
    """`model` with one value of its first block's MLP output weights changed: same name, shapes and embedding."""
    p = next(p for n, p in model.named_parameters() if "down_proj" in n)  # type: ignore[attr-defined]
    with torch.no_grad():
        p.view(-1)[-1] += 1.0  # the last element is always sampled
    return model


def test_dtype_processing_and_weights_each_change_the_fingerprint() -> None:
    builds = [quiet(), quiet(dtype="bfloat16"), quiet(process_weights=True), quiet(seed=3), nudged(quiet())]
    prints = [model_fingerprint(m) for m in builds]  # type: ignore[arg-type]
    assert prints[0] == model_fingerprint(quiet())  # type: ignore[arg-type]  # the same build: the same fingerprint
    assert prints[1]["dtype"] == "bfloat16" and prints[0]["dtype"] == "float32"
    assert prints[2]["processing"] != prints[0]["processing"]
    assert len({json.dumps(p, sort_keys=True) for p in prints}) == 5
    ident = model_identity(builds[0])  # type: ignore[arg-type]
    assert (prints[0]["n_layers"], prints[0]["d_model"]) == (ident.n_layers, ident.d_model)


def test_model_fingerprint_reads_every_sampled_index_of_a_large_tensor() -> None:
    """A parameter past 2**24 elements (the embedded model's 49152 x 576 embedding) is sampled in range, ends
    included."""

    class Big(torch.nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(n, dtype=torch.float32), requires_grad=False)

    class Cfg:
        model_name, n_layers, d_model = "big", 1, 1

    n = 49152 * 576
    a, b = Big(n), Big(n)
    for m in (a, b):
        object.__setattr__(m, "cfg", Cfg())
    with torch.no_grad():
        b.w[-1] = -1.0  # the last element is one of the samples: the fingerprint must see it
    fa, fb = model_fingerprint(a), model_fingerprint(b)  # type: ignore[arg-type]
    assert fa["weights"] != fb["weights"] and fa["dtype"] == "float32"


def test_the_store_and_the_stage_cache_record_the_one_fingerprint() -> None:
    model = quiet()
    fp = model_fingerprint(model)  # type: ignore[arg-type]
    assert model_key(model) == {"model": "tiny-llama", "fingerprint": fp}  # type: ignore[arg-type]
    inputs = model_inputs(model)  # type: ignore[arg-type]
    settings = prediction_settings(model, "cloze", "reference")  # type: ignore[arg-type]
    assert inputs["model"] == settings["model"] == "tiny-llama"
    assert inputs["fingerprint"] == settings["model_fingerprint"] == fp


def test_the_finetune_key_follows_weights_the_embedding_does_not_show() -> None:
    texts, recipe = ["a b c", "d e f"], LoraRecipe()
    base = quiet()
    key = finetune_key(base, texts, recipe, 0)  # type: ignore[arg-type]
    assert key == finetune_key(quiet(), texts, recipe, 0)  # type: ignore[arg-type]
    assert finetune_key(nudged(quiet()), texts, recipe, 0) != key  # type: ignore[arg-type]


@needs_data
def test_the_activation_cache_keeps_other_weights_under_the_same_name_apart(tmp_path: Path) -> None:
    a, b = quiet(), nudged(quiet())
    assert model_identity(a) == model_identity(b)  # type: ignore[arg-type]  # name, depth, width, processing
    first = ActivationCache(a, (1,), disk_dir=tmp_path)  # type: ignore[arg-type]
    first.get("age", 3, 0, 0)
    other = ActivationCache(b, (1,), disk_dir=tmp_path)  # type: ignore[arg-type]
    got = other.get("age", 3, 0, 0)
    assert other.pairs_read == 3 and len(list(tmp_path.glob("acts-*.pt"))) == 2  # read from b, not a's file
    again = ActivationCache(quiet(), (1,), disk_dir=tmp_path)  # type: ignore[arg-type]
    again.get("age", 3, 0, 0)
    assert again.pairs_read == 0  # the same weights find their file
    assert not torch.equal(got.positive[1], first.get("age", 3, 0, 0).positive[1])
