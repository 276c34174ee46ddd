"""Tests for lens_steer.forward.shared_prefix: a prefix run once and extended per row gives what a full forward of each
row (prefix and row as one sequence) gives, steered and unsteered, on the tiny model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_models import block1_steering, kv_cache_tiny_llama, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.forward.shared_prefix import (
    MIN_SHARED_PREFIX,
    common_prefix_length,
    common_token_prefix,
    run_shared_prefix,
)
from lens_steer.model.tokens import encode_texts, pad_batch, pad_id

SYSTEM = "You are a careful assistant who answers every question about animals briefly. "
ROWS = ["The cat sat.", "A dog ran home fast tonight.", "Fish swim."]


@pytest.fixture(scope="module")
def model() -> Any:
    return kv_cache_tiny_llama()


steering = block1_steering  # the shared seeded vector at block 1


def full_logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0].float()


def test_common_prefix_leaves_a_token_of_each_text() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 9]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter text keeps its last token
    assert common_prefix_length([[7], [7]]) == 0
    assert common_prefix_length([[1, 2], [3, 4]]) == 0


def test_a_short_common_prefix_is_not_run(model: Any) -> None:
    ids = encode_texts(model, ["The cat sat.", "The dog ran."])
    assert common_prefix_length(ids) < MIN_SHARED_PREFIX
    assert common_token_prefix(model, ids) is None


@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
def test_one_prefix_extended_per_row_equals_a_full_forward_per_row(model: Any, steered: bool) -> None:
    ids = encode_texts(model, [SYSTEM + r for r in ROWS])
    with steering(model, steered):
        prefix = common_token_prefix(model, ids)
        assert prefix is not None and prefix.length == common_prefix_length(ids) >= MIN_SHARED_PREFIX
        rows = pad_batch([r[prefix.length :] for r in ids], pad_id=pad_id(model), padding_side="right")
        owner = torch.zeros(len(ids), dtype=torch.long)
        for _ in range(2):  # `reuse` keeps the prefix intact for the next batch
            with torch.inference_mode():
                logits = model(rows.tokens, **prefix.row_kwargs(owner, rows.attention_mask, reuse=True)).float()
            assert prefix.cache.get_seq_length() == prefix.length and prefix.cache.layers[0].keys.shape[0] == 1
            for r, seq in enumerate(ids):
                n = len(seq) - prefix.length
                torch.testing.assert_close(
                    logits[r, :n], full_logits(model, seq)[prefix.length :], rtol=1e-4, atol=1e-4
                )


@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
def test_a_batch_of_prompts_extended_by_their_options_equals_a_full_forward_per_option(
    model: Any, steered: bool
) -> None:
    prompts = encode_texts(model, ["Two friends met at the station. Who was late?", "A cat and a dog played. Who won?"])
    options = [
        model.tokenizer(o, add_special_tokens=False)["input_ids"]
        for o in (" The first friend", " Unknown", " cat", " the dog did")
    ]
    owner = torch.tensor([0, 0, 1, 1])
    p = pad_batch(prompts, pad_id=pad_id(model), padding_side="right")
    c = pad_batch(options, pad_id=pad_id(model), padding_side="right")
    with steering(model, steered):
        with torch.inference_mode():
            prompt_logits, shared = run_shared_prefix(
                lambda cache: model(p.tokens, past_key_values=cache).float(), p.attention_mask
            )
            logits = model(c.tokens, **shared.row_kwargs(owner, c.attention_mask)).float()
        assert shared.cache.layers[0].keys.shape[0] == len(options)  # reordered in place: one copy per option
        for r, o in enumerate(options):
            prompt = prompts[int(owner[r])]
            want = full_logits(model, prompt + o)
            torch.testing.assert_close(
                prompt_logits[int(owner[r]), len(prompt) - 1], want[len(prompt) - 1], rtol=1e-4, atol=1e-4
            )
            torch.testing.assert_close(logits[r, : len(o)], want[len(prompt) :], rtol=1e-4, atol=1e-4)


def test_steering_changes_what_the_shared_prefix_gives(model: Any) -> None:
    ids = encode_texts(model, [SYSTEM + r for r in ROWS])
    out = []
    for steered in (False, True):
        with steering(model, steered):
            prefix = common_token_prefix(model, ids)
            rows = pad_batch(
                [r[prefix.length :] for r in ids],  # type: ignore[union-attr]
                pad_id=pad_id(model),
                padding_side="right",
            )
            with torch.inference_mode():
                out.append(
                    model(
                        rows.tokens, **prefix.row_kwargs(torch.zeros(len(ids), dtype=torch.long), rows.attention_mask)
                    ).float()
                )  # type: ignore[union-attr]
    assert (out[0] - out[1]).abs().max() > 1e-2
