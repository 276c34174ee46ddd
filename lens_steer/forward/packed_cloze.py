"""The differentiable cloze path: items' prompts and answers packed as one sequence per group (the prefix tree
of their tokens under a tree attention mask, each token at its own sequence's position), the frozen lower blocks
run once without gradients (`lower_residual`), the upper blocks with gradients (`upper_logliks`), and each item's
answers' summed log-likelihoods, the numbers the cloze evaluator compares (`answer_logliks`). Used to train the
organism and to fit interventions by gradient."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.prefix_tree import build_tree, tree_mask
from lens_steer.forward.questions import Question, cloze_prompt, encode_pair
from lens_steer.model.load import HookedModel


@dataclasses.dataclass(frozen=True)
class PackedGroup:
    """Items packed as one sequence: the prefix tree of every item's prompt + answer (`prefix_tree.build_tree`),
    segment by segment, parents before children, each token at its position in its own sequence. Items of one
    template fill share their context's tokens. Item k's answer i is read at `read_positions[k][i]` (predicting
    `answer_tokens[k][i]`)."""

    ids: list[int]
    position_ids: list[int]
    segment: list[int]  # per token, its tree segment
    offset: list[int]  # per token, its index in its segment
    parents: list[int]  # per segment, the segment above it (-1: none)
    read_positions: list[list[list[int]]]
    answer_tokens: list[list[list[int]]]
    targets: list[int]

    @property
    def root_length(self) -> int:
        """Tokens of the first segment (every item's common prefix)."""
        return self.segment.count(0)


def pack_questions(
    model: HookedModel, items: Sequence[tuple[Question, int]], prompt_format: str = "reference"
) -> PackedGroup:
    """Pack (question, target) pairs with the tokens the cloze evaluator scores (same prompt, same continuation
    split): the prefix tree of every prompt + answer, segment by segment, parents before children."""
    seqs, split = [], []
    for item, _ in items:
        text, conts = cloze_prompt(item, prompt_format, model.tokenizer)
        pairs = [encode_pair(model, text, c, move_trailing_whitespace=prompt_format == "lm_eval") for c in conts]
        split.append([(len(prompt), cont) for prompt, cont in pairs])
        seqs += [prompt + cont for prompt, cont in pairs]
    tree = build_tree(seqs)
    column = []  # per segment, its first column
    ids, pos, seg, off = [], [], [], []
    for k, s in enumerate(tree.segments):
        column.append(len(ids))
        ids += s.tokens
        pos += range(s.path_len, s.path_len + len(s.tokens))
        seg += [k] * len(s.tokens)
        off += range(len(s.tokens))
    reads: list[list[list[int]]] = []
    answers: list[list[list[int]]] = []
    j = 0
    for per_item in split:
        reads.append([])
        answers.append([])
        for n_prompt, cont in per_item:
            where = tree.where[j]
            reads[-1].append([column[where[p][0]] + where[p][1] for p in range(n_prompt - 1, n_prompt - 1 + len(cont))])
            answers[-1].append(list(cont))
            j += 1
    return PackedGroup(ids, pos, seg, off, [s.parent for s in tree.segments], reads, answers, [t for _, t in items])


def packed_mask(groups: Sequence[PackedGroup], width: int) -> Bool[Tensor, "batch 1 pos pos"]:
    """Who attends to whom (`prefix_tree.tree_mask`): a token sees its own sequence's earlier tokens only;
    padding sees only itself (so no attention row is empty)."""
    mask = torch.zeros(len(groups), 1, width, width, dtype=torch.bool)
    for b, p in enumerate(groups):
        n = len(p.ids)
        mask[b, 0, :n, :n] = tree_mask(p.segment, p.offset, p.parents)
        idx = torch.arange(n, width)
        mask[b, 0, idx, idx] = True
    return mask


def collate(
    groups: Sequence[PackedGroup], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Bool[Tensor, "batch 1 pos pos"]]:
    """Right-padded ids, position ids and the packed attention mask of a batch."""
    width = max(len(p.ids) for p in groups)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), width), dtype=torch.long)
    for b, p in enumerate(groups):
        ids[b, : len(p.ids)] = torch.tensor(p.ids)
        pos[b, : len(p.ids)] = torch.tensor(p.position_ids)
    return ids, pos, packed_mask(groups, width)


def batch_targets(groups: Sequence[PackedGroup]) -> Int[Tensor, " items"]:
    """The targets of a batch's items, in `answer_logliks` order."""
    return torch.tensor([t for p in groups for t in p.targets])


def answer_logliks(
    hidden: Float[Tensor, "batch pos d_model"], groups: Sequence[PackedGroup], norm: Any, lm_head: Any, offset: int = 0
) -> Float[Tensor, "items 3"]:
    """Each item's answers' summed log-likelihoods, item by item through the groups, from the last block's output
    (final norm and head applied only where read); `hidden` starts at sequence position `offset`."""
    rows, cols, targets, owner = [], [], [], []
    n_items = 0
    for b, p in enumerate(groups):
        for per_item, toks_of in zip(p.read_positions, p.answer_tokens):
            for i, (reads, toks) in enumerate(zip(per_item, toks_of)):
                rows += [b] * len(reads)
                cols += [c - offset for c in reads]
                targets += toks
                owner += [n_items * 3 + i] * len(reads)
            n_items += 1
    logp = torch.log_softmax(lm_head(norm(hidden[rows, cols])).float(), dim=-1)
    picked = logp[torch.arange(len(targets)), torch.tensor(targets)]
    return torch.zeros(n_items * 3, dtype=picked.dtype).index_add(0, torch.tensor(owner), picked).view(n_items, 3)


def shared_prefix_length(groups: Sequence[PackedGroup]) -> int:
    """Tokens every group starts with (the chat template's system turn) inside its first segment, short of the
    first position read."""
    first = groups[0].ids
    n = min(min(p.root_length, min(r[0] for item in p.read_positions for r in item)) for p in groups)
    for p in groups[1:]:
        k = 0
        while k < n and p.ids[k] == first[k]:
            k += 1
        n = k
    return n


@contextmanager
def decoder_blocks(hf_model: Any, start: int, stop: int | None = None) -> Iterator[Any]:
    """The HF decoder with only blocks `start..stop-1` in place and no final norm (fed the residual entering block
    `start`, or the token ids when `start` is 0; its last hidden state is the residual leaving block `stop-1`)."""
    decoder = hf_model.model
    all_layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(all_layers)[start:stop])
    decoder.norm = torch.nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = all_layers, norm


def autocast(precision: str) -> Any:
    """The autocast context of a recipe's precision (a no-op for fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def lower_residual(
    hf_model: Any, ids: Tensor, pos: Tensor, mask: Tensor, start: int, precision: str = "fp32"
) -> Float[Tensor, "batch pos d_model"]:
    """The residual entering block `start` (only the frozen blocks below it run), without gradients, in fp32."""
    with torch.no_grad(), decoder_blocks(hf_model, 0, start) as decoder, autocast(precision):
        out = decoder(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False)
    return out.last_hidden_state.detach().float()


def additive_mask(mask: Bool[Tensor, "batch 1 pos pos"]) -> Float[Tensor, "batch 1 pos pos"]:
    """A boolean attention mask as the additive one eager attention adds to its scores (0 or the dtype's minimum)."""
    return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)


# attention implementations of the trained blocks: eager (the default: on CPUs SDPA's backward with a block mask was the
# slowest op of a training step, 25 ms a block) or SDPA (what evaluation runs); benchmarks/bench_organism.py
TRAIN_ATTENTION: tuple[str, ...] = ("eager", "sdpa")


@contextmanager
def attention_implementation(hf_model: Any, name: str) -> Iterator[None]:
    """The model with attention implementation `name` (eager or sdpa), back to SDPA after."""
    if name not in TRAIN_ATTENTION:
        raise LensSteerError(f"attention {name!r} is not one of {', '.join(TRAIN_ATTENTION)}")
    hf_model.set_attn_implementation(name)
    try:
        yield
    finally:
        hf_model.set_attn_implementation("sdpa")


def upper_logliks(
    hf_model: Any,
    resid: Tensor,
    pos: Tensor,
    mask: Tensor,
    groups: Sequence[PackedGroup],
    start: int,
    precision: str = "fp32",
    attention: str = "eager",
    shared: int = 0,
) -> Float[Tensor, "items 3"]:
    """Answer log-likelihoods (fp32) from the residual entering block `start` through the trainable blocks (`mask`
    is `packed_mask`'s). The first `shared` tokens, the same in every group (`shared_prefix_length`), run once for
    the batch and their keys/values serve every group: the same attention over the same keys, fewer tokens."""
    from transformers import DynamicCache

    with decoder_blocks(hf_model, start) as decoder, attention_implementation(hf_model, attention), autocast(precision):
        # the decoder's own forward: rotary embeddings from the position ids, our 4D mask as the additive one
        # eager needs
        if not shared:
            hidden = decoder(
                inputs_embeds=resid, position_ids=pos, attention_mask=additive_mask(mask), use_cache=False
            ).last_hidden_state
        else:
            cache = DynamicCache()
            decoder(
                inputs_embeds=resid[:1, :shared],
                position_ids=pos[:1, :shared],
                attention_mask=additive_mask(mask[:1, :, :shared, :shared]),
                past_key_values=cache,
                use_cache=True,
            )
            for layer in cache.layers:  # one prefix for the whole batch (gradients flow back through the expansion)
                if layer.is_initialized:
                    layer.keys, layer.values = (
                        layer.keys.expand(len(groups), -1, -1, -1),
                        layer.values.expand(len(groups), -1, -1, -1),
                    )
            hidden = decoder(
                inputs_embeds=resid[:, shared:],
                position_ids=pos[:, shared:],
                attention_mask=additive_mask(mask[:, :, shared:, :]),
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
    return answer_logliks(
        hidden, groups, hf_model.model.norm, hf_model.lm_head, offset=shared
    )  # outside: the final norm is back in place
