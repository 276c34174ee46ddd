"""Tests for lens_steer.model.tokens: BOS rule, padding, masks and batches, checked by hand and against unpadded
runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_models import BACKENDS, bridge_only, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.model import load as models
from lens_steer.model.tokens import bos_record, encode_texts, length_batches, model_device, pad_batch, pad_id


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny(request.param)


def test_encode_bos_rule(model: Any) -> None:
    tok = model.tokenizer
    bos = tok.bos_token_id
    plain = tok("abc", add_special_tokens=False)["input_ids"]
    # the tiny tokenizer's own default adds BOS to plain text; the policy follows it
    assert tok("abc")["input_ids"] == [bos, *plain]
    assert encode_texts(model, ["abc"]) == [tok("abc")["input_ids"]]
    assert encode_texts(model, ["abc"], prepend_bos=False) == [plain]
    assert encode_texts(model, ["abc"], prepend_bos=True) == [[bos, *plain]]
    already = tok.bos_token + "abc"
    assert encode_texts(model, [already]) == [tok(already, add_special_tokens=False)["input_ids"]]
    assert encode_texts(model, [already])[0].count(bos) == 1
    assert bos_record(model)["bos_on_plain_text"] is True


@bridge_only
def test_encode_follows_a_tokenizer_that_adds_nothing() -> None:
    """A checkpoint whose tokenizer adds no special tokens (as SmolLM2's) gets no BOS under the default
    policy, although TransformerLens makes the wrapped tokenizer prepend one."""
    hf_model, tok = models.tiny_hf_model()
    tok.add_bos_token = False
    reference = models.tiny_tokenizer()
    reference.add_bos_token = False
    assert (
        reference("abc")["input_ids"] == reference("abc", add_special_tokens=False)["input_ids"]
    )  # its own default: no BOS
    model = models.wrap_hf_model(hf_model, tok, name="tiny-no-bos")
    assert encode_texts(model, ["abc"]) == [reference("abc")["input_ids"]]
    assert bos_record(model)["bos_on_plain_text"] is False
    assert encode_texts(model, ["abc"], prepend_bos=True)[0][0] == reference.bos_token_id


def test_pad_batch_right_and_left_by_hand() -> None:
    rows = [[5, 6, 7], [8]]
    right = pad_batch(rows, pad_id=0, padding_side="right")
    assert right.tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right.last_index.tolist() == [2, 0]
    assert right.forward_kwargs() == {}
    left = pad_batch(rows, pad_id=0, padding_side="left")
    assert left.tokens.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert left.last_index.tolist() == [2, 2]
    assert left.forward_kwargs()["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pad_batch([[1, 2]], pad_id=0, padding_side="left").forward_kwargs() == {}  # nothing padded
    for bad in ([], [[1], []]):
        with pytest.raises(ValueError):
            pad_batch(bad, pad_id=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_forward_equals_unpadded_at_real_tokens(model: Any, side: str) -> None:
    texts = ["Hello there, general", "Hi"]
    ids = encode_texts(model, texts)
    batch = pad_batch(ids, pad_id=pad_id(model), padding_side=side)
    with torch.no_grad():
        logits = model(batch.tokens, **batch.forward_kwargs())
        for i, row in enumerate(ids):
            alone = model(torch.tensor([row]))[0, -1]
            torch.testing.assert_close(logits[i, int(batch.last_index[i])], alone, atol=1e-4, rtol=0)


def test_pad_id_prefers_pad_then_eos(model: Any) -> None:
    assert pad_id(model) == model.tokenizer.pad_token_id
    assert model_device(model) == torch.device("cpu")


def test_length_batches_cover_each_index_once_within_budgets() -> None:
    lengths = [5, 1, 9, 9, 3, 7, 2, 8, 4, 6]
    batches = length_batches(lengths, max_batch=3, max_tokens=20)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert max(lengths[i] for i in b) * len(b) <= 20 or len(b) == 1
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    assert length_batches([100], max_batch=4, max_tokens=10) == [[0]]  # an over-long text still gets a batch
