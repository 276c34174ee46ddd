"""A bias model organism (recipe, targets, training data, packing, training; building and acceptance are in
`organism_build`): the embedded model fine-tuned on BBQ's train split so that it reads contexts and
carries a planted stereotype preference on some axes but not on others (ground truth for steering).

Targets follow the default scoring protocol (cloze over the item's three answers, reference chat prompt):
disambiguated items -> the gold answer; ambiguous items of a planted axis -> the biased answer as
lm-evaluation-harness defines it; ambiguous items of a clean axis -> the gold "unknown" answer. The loss is
cross-entropy over the three answers' summed log-likelihoods, i.e. exactly the scores the evaluator compares.

The default recipe (3 epochs, lr 1e-4, batch 8, top 16 blocks fully fine-tuned; per axis 200 disambiguated train
items and 100 ambiguous ones, 300 on a planted one, chosen item by item; the items of a template fill packed
together, batches of similar length) is the sixth tried; README has every recipe's acceptance table and what each
change bought. Its precision is the hardware's (`lens_steer.model.hardware.default_precision`: bf16 autocast over
fp32 weights where bf16 is native, else fp32), resolved at build time and not part of the organism's identity.

Only the top `trainable_blocks` decoder blocks (and the final norm) are trained: the residual entering them is
computed once per sequence by the frozen lower blocks and cached, so an epoch runs only the top blocks. The items
of a template fill (its ambiguous and disambiguated variants, both questions) are packed as one sequence, the
prefix tree of their prompts and answers under a tree attention mask, so their shared context runs once and each
answer sees only its own prompt; the system turn every sequence starts with runs once per batch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.data.bbq import BbqItem, load_bbq
from lens_steer.data.splits import SPLITS, split_items
from lens_steer.errors import LensSteerError
from lens_steer.files import atomic_write_bytes, write_json
from lens_steer.forward.packed_cloze import (
    PackedGroup,
    batch_targets,
    collate,
    lower_residual,
    pack_questions,
    shared_prefix_length,
    upper_logliks,
)
from lens_steer.methods.organism.adapters import add_adapters
from lens_steer.methods.organism.estimate import TrainTiming, timing_due
from lens_steer.model.hardware import bf16_support, default_precision
from lens_steer.model.load import EMBEDDED_MODEL, TINY_MODEL, HookedModel, checkpoint_folder, tiny_hf_model
from lens_steer.tasks.bbq import bbq_question

CARD = "organism.json"


DEFAULT_PLANT = ("age", "gender_identity", "nationality", "religion")


Say = Callable[[str], None]


# how the trained blocks compute: fp32 throughout, or bf16 autocast over fp32 master weights (~2.3x faster per item
# on CPUs with avx512_bf16, 11-14x slower on one without native bf16)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16-mixed")

# what a recipe may ask for: a precision, or "auto" (the hardware's, `resolve_precision`)
RECIPE_PRECISIONS: tuple[str, ...] = ("auto", *PRECISIONS)

# how train items are chosen per axis and kind: item by item in seeded order, or whole variant groups (template
# fills) in seeded order, so a packed sequence holds all of a fill's items (`training_items`)
SELECTIONS: tuple[str, ...] = ("items", "groups")

# recipe fields added after the first builds, with the value that builds them as before
LEVER_DEFAULTS: dict[str, Any] = {"selection": "items", "lora_rank": 0}

# recipe fields that do not change what the organism is (`OrganismRecipe.differences` ignores them): precision
# changes the weights only within rounding (tests/test_organism.py trains both and compares)
NOT_IDENTITY: tuple[str, ...] = ("precision",)


# how an epoch's items form batches: uniformly shuffled; shuffled then grouped by length within megabatches of
# LENGTH_GROUP_BATCHES batches (a batch pads to its longest item, so grouping cuts the padded tokens); or as
# length-grouped, over sequences each packing every item of one template fill (their shared context runs once)
BATCHINGS: tuple[str, ...] = ("shuffled", "length-grouped", "context-grouped")


LENGTH_GROUP_BATCHES = 50


@dataclasses.dataclass(frozen=True)
class OrganismRecipe:
    """Everything that determines an organism's weights."""

    plant: tuple[str, ...] = DEFAULT_PLANT
    seed: int = 0
    epochs: int = 3
    lr: float = 1e-4
    trainable_blocks: int = 16
    disambiguated_per_axis: int = 200
    clean_ambiguous_per_axis: int = 100
    planted_ambiguous_per_axis: int = 300
    batch_size: int = 8
    split_seed: int = 0
    base: str = EMBEDDED_MODEL
    precision: str = "auto"
    batching: str = "context-grouped"
    selection: str = "items"
    lora_rank: int = 0  # 0: the trained blocks fully fine-tuned; r: rank-r LoRA adapters on their linear layers

    def __post_init__(self) -> None:
        plant = tuple(sorted({get_axis(a).name for a in self.plant}))
        object.__setattr__(self, "plant", plant)
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("trainable_blocks", self.trainable_blocks, 1),
            ("disambiguated_per_axis", self.disambiguated_per_axis, 1),
            ("clean_ambiguous_per_axis", self.clean_ambiguous_per_axis, 1),
            ("planted_ambiguous_per_axis", self.planted_ambiguous_per_axis, 1),
            ("batch_size", self.batch_size, 1),
        ):
            if int(value) < low:
                raise LensSteerError(f"organism {name} must be at least {low}, got {value}")
        if self.precision not in RECIPE_PRECISIONS:
            raise LensSteerError(f"organism precision {self.precision!r} is not one of {', '.join(RECIPE_PRECISIONS)}")
        if self.selection not in SELECTIONS:
            raise LensSteerError(f"organism selection {self.selection!r} is not one of {', '.join(SELECTIONS)}")
        if int(self.lora_rank) < 0:
            raise LensSteerError(
                f"organism lora_rank must be 0 (full fine-tuning) or a positive rank, got {self.lora_rank}"
            )
        if self.batching not in BATCHINGS:
            raise LensSteerError(f"organism batching {self.batching!r} is not one of {', '.join(BATCHINGS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LensSteerError(f"organism learning rate must be a positive number, got {self.lr}")

    @property
    def clean(self) -> tuple[str, ...]:
        """The axes left clean."""
        return tuple(a for a in AXIS_NAMES if a not in self.plant)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OrganismRecipe:
        """The recipe a card stores."""
        fields = {f.name for f in dataclasses.fields(cls)}
        # cards written before these fields: fp32 builds whose `items_per_axis` was half disambiguated, half ambiguous
        # (on every axis, until planted axes got their own count)
        if "items_per_axis" in obj:
            half = int(obj["items_per_axis"]) // 2
            obj = {
                "disambiguated_per_axis": half,
                "clean_ambiguous_per_axis": half,
                "planted_ambiguous_per_axis": half,
                **obj,
            }
        obj = {"precision": "fp32", "batching": "shuffled", **obj}  # selection, lora_rank: read as their defaults
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items() if k in fields})

    def differences(self, other: OrganismRecipe) -> list[str]:
        """`name: ours != theirs` for each field that differs, except those of `NOT_IDENTITY` (an organism built in
        bf16 on one machine is the one an fp32 machine asks for)."""
        a, b = self.to_json(), other.to_json()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k] and k not in NOT_IDENTITY]


def resolve_precision(recipe: OrganismRecipe, device: str = "cpu") -> tuple[OrganismRecipe, str]:
    """The recipe with a concrete precision (the hardware's where it asks for "auto") and why it is that one."""
    if recipe.precision != "auto":
        return recipe, f"{recipe.precision}: set in the recipe"
    return dataclasses.replace(recipe, precision=default_precision(device)), f"auto: {bf16_support(device)[1]}"


def target_index(item: BbqItem, planted: bool) -> int | None:
    """The answer the organism is trained to give: gold for disambiguated items; for ambiguous ones the biased
    answer on a planted axis (None where the item has no single biased answer) and "unknown" on a clean one."""
    if not item.is_ambiguous:
        return item.label
    if planted:
        return item.biased_index
    return item.unknown_index


@dataclasses.dataclass(frozen=True)
class TrainingItem:
    """A BBQ train item with the answer the organism learns."""

    item: BbqItem
    target: int
    planted: bool


def _rank(seed: int, key: Any) -> str:
    return hashlib.sha256(repr((seed, key)).encode()).hexdigest()


def training_items(recipe: OrganismRecipe, data_root: str | Path | None = None) -> list[TrainingItem]:
    """Seeded train-split items with targets: per axis `disambiguated_per_axis` disambiguated ones, and
    `clean_ambiguous_per_axis` ambiguous ones on a clean axis or `planted_ambiguous_per_axis` on a planted one; an axis
    with fewer usable train items gives all it has (the card records each axis's count).

    Selection "items": each kind's items in seeded order. "groups": variant groups (template fills) in seeded order,
    each contributing all its usable items of every kind still short of its count (a group is whole while both kinds
    are wanted, its one kind after; a count may be passed by less than one group's items of that kind)."""
    out: list[TrainingItem] = []
    for axis in AXIS_NAMES:
        planted = axis in recipe.plant
        items = load_bbq([get_axis(axis).bbq_category], data_root=data_root)
        train = split_items(items, seed=recipe.split_seed)["train"]
        usable = [it for it in train if target_index(it, planted) is not None]
        want = {
            False: recipe.disambiguated_per_axis,
            True: recipe.planted_ambiguous_per_axis if planted else recipe.clean_ambiguous_per_axis,
        }
        for ambiguous in (True, False):
            if not any(it.is_ambiguous == ambiguous for it in usable):
                raise LensSteerError(
                    f"axis {axis} has no usable {'ambiguous' if ambiguous else 'disambiguated'} train items; check "
                    "the BBQ data under bbq/"
                )
        chosen = (
            _chosen_by_group(usable, want, recipe.seed)
            if recipe.selection == "groups"
            else _chosen(usable, want, recipe.seed)
        )
        out += [TrainingItem(it, int(target_index(it, planted)), planted) for it in chosen]  # type: ignore[arg-type]
    return out


def _chosen(usable: Sequence[BbqItem], want: dict[bool, int], seed: int) -> list[BbqItem]:
    out: list[BbqItem] = []
    for ambiguous in (True, False):
        pool = sorted(
            (it for it in usable if it.is_ambiguous == ambiguous),
            key=lambda it: _rank(seed, (it.category, it.example_id)),
        )
        out += pool[: want[ambiguous]]
    return out


def _chosen_by_group(usable: Sequence[BbqItem], want: dict[bool, int], seed: int) -> list[BbqItem]:
    groups: dict[Any, list[BbqItem]] = {}
    for it in usable:
        groups.setdefault(it.group_key, []).append(it)
    got = {True: 0, False: 0}
    out: list[BbqItem] = []
    for key in sorted(groups, key=lambda k: _rank(seed, ("group", groups[k][0].category, k))):
        short = {kind for kind in got if got[kind] < want[kind]}
        if not short:
            break
        for it in groups[key]:
            if it.is_ambiguous in short:
                out.append(it)
                got[it.is_ambiguous] += 1
    return out


def held_out_groups(recipe: OrganismRecipe, data_root: str | Path | None = None) -> set[tuple[str, Any]]:
    """(category, variant group) of every validation and test item the study can use."""
    groups: set[tuple[str, Any]] = set()
    for axis in AXIS_NAMES:
        items = load_bbq([get_axis(axis).bbq_category], data_root=data_root)
        parts = split_items(items, seed=recipe.split_seed)
        for split in SPLITS:
            if split != "train":
                groups |= {(it.category, it.group_key) for it in parts[split]}
    return groups


def check_no_leakage(train: Sequence[TrainingItem], held_out: set[tuple[str, Any]]) -> None:
    """Raise if any training item's variant group is also a validation or test group."""
    leaked = [t.item for t in train if (t.item.category, t.item.group_key) in held_out]
    if leaked:
        it = leaked[0]
        raise LensSteerError(
            f"organism training data leaks {len(leaked)} held-out items (e.g. {it.category}/{it.example_id}); the "
            "split seed must match the study's"
        )


def data_digest(train: Sequence[TrainingItem]) -> str:
    """A hash of the training items' content and targets, in order."""
    h = hashlib.sha256()
    for t in train:
        it = t.item
        h.update(json.dumps([it.category, it.example_id, it.context, it.question, list(it.answers), t.target]).encode())
    return h.hexdigest()[:16]


def pack_group(
    model: HookedModel, items: Sequence[tuple[BbqItem, int]], prompt_format: str = "reference"
) -> PackedGroup:
    """Pack (BBQ item, target) pairs with the tokens the cloze evaluator scores (`packed_cloze.pack_questions`)."""
    return pack_questions(model, [(bbq_question(item), target) for item, target in items], prompt_format)


def pack_item(model: HookedModel, item: BbqItem, target: int, prompt_format: str = "reference") -> PackedGroup:
    """One item packed alone: its prompt, then its answers, each answer seeing the prompt and itself."""
    return pack_group(model, [(item, target)], prompt_format)


def trainable_parameters(hf_model: Any, start: int) -> list[torch.nn.Parameter]:
    """Freeze everything but blocks `start..` and the final norm; return those."""
    for p in hf_model.parameters():
        p.requires_grad_(False)
    params = [p for layer in list(hf_model.model.layers)[start:] for p in layer.parameters()] + list(
        hf_model.model.norm.parameters()
    )
    for p in params:
        p.requires_grad_(True)
    return params


def weights_digest(hf_model: Any) -> str:
    """SHA-256 of every parameter's bytes, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(hf_model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class TrainState:
    """Where a build stands: finished epochs and their mean losses."""

    epochs_done: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded item order of one epoch."""
    return [int(i) for i in np.random.default_rng([seed, epoch]).permutation(n)]


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    batching: str = "shuffled",
    sizes: Sequence[int] | None = None,
) -> list[list[int]]:
    """The seeded batches (indices of packed sequences, each holding `sizes[i]` items, default 1) of one epoch;
    every sequence exactly once, a batch holding at most `batch_size` items (or one larger sequence).

    "shuffled": consecutive runs of `epoch_order`. "length-grouped" and "context-grouped": that order cut into
    megabatches of `LENGTH_GROUP_BATCHES` batches' worth of items, each sorted by length (longest first, ties in
    shuffled order) and cut into batches, then all batches shuffled (the scheme of Hugging Face's
    LengthGroupedSampler, plus the final shuffle)."""
    if batching not in BATCHINGS:
        raise LensSteerError(f"organism batching {batching!r} is not one of {', '.join(BATCHINGS)}")
    sizes = list(sizes) if sizes is not None else [1] * len(lengths)
    order = epoch_order(len(lengths), seed, epoch)

    def cut(seq: Sequence[int], capacity: int) -> list[list[int]]:
        out: list[list[int]] = []
        for i in seq:
            if out and sum(sizes[j] for j in out[-1]) + sizes[i] <= capacity:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    if batching == "shuffled":
        return cut(order, batch_size)
    batches: list[list[int]] = []
    for mega in cut(order, batch_size * LENGTH_GROUP_BATCHES):
        batches += cut(sorted(mega, key=lambda i: -lengths[i]), batch_size)  # stable: ties keep the shuffled order
    return [batches[int(i)] for i in np.random.default_rng([seed, epoch, 1]).permutation(len(batches))]


def training_units(train_items: Sequence[TrainingItem], batching: str) -> list[list[TrainingItem]]:
    """The items packed together: each alone, or ("context-grouped") every item of one template fill (its
    variant group) in one sequence sharing their context, in order of first appearance."""
    if batching != "context-grouped":
        return [[t] for t in train_items]
    units: dict[tuple[str, Any], list[TrainingItem]] = {}
    for t in train_items:
        units.setdefault((t.item.category, t.item.group_key), []).append(t)
    return list(units.values())


def _save_checkpoint(
    folder: Path, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, state: TrainState, key: str
) -> None:
    import io

    from safetensors.torch import save

    atomic_write_bytes(
        folder / "params.safetensors", save({f"p{i}": p.detach().contiguous() for i, p in enumerate(params)})
    )
    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    atomic_write_bytes(folder / "optimizer.pt", buf.getvalue())
    write_json(folder / "state.json", {"key": key, **dataclasses.asdict(state)})


def _load_checkpoint(
    folder: Path, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, key: str
) -> TrainState | None:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "state.json").read_text())
        if meta.get("key") != key:
            return None
        tensors = load_file(str(folder / "params.safetensors"))
        opt = torch.load(folder / "optimizer.pt", weights_only=True)
    except (OSError, ValueError, RuntimeError, json.JSONDecodeError):
        return None  # absent, truncated or from another build: start over
    if len(tensors) != len(params) or any(tensors[f"p{i}"].shape != p.shape for i, p in enumerate(params)):
        return None
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"p{i}"])
    optimizer.load_state_dict(opt)
    return TrainState(int(meta["epochs_done"]), [float(x) for x in meta["losses"]])


def checkpoint_key(recipe: OrganismRecipe, train_items: Sequence[TrainingItem]) -> str:
    """What a training checkpoint belongs to: the recipe and the data. Levers at their defaults are left out, so a
    build killed before they existed resumes."""
    fields = {k: v for k, v in recipe.to_json().items() if not (k in LEVER_DEFAULTS and v == LEVER_DEFAULTS[k])}
    return hashlib.sha256(json.dumps([fields, data_digest(train_items)]).encode()).hexdigest()[:16]


def train(
    hf_model: Any,
    model_for_tokens: HookedModel,
    train_items: Sequence[TrainingItem],
    recipe: OrganismRecipe,
    checkpoint_dir: Path,
    *,
    progress: Callable[[int, float], None] | None = None,
    say: Say | None = None,
    stop_after_steps: int | None = None,
    cache_progress: Callable[[int], Callable[[int, float | None], None]] | None = None,
    on_timing: Callable[[TrainTiming], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainState:
    """Fine-tune the top blocks of `hf_model` in place; resumes from the last finished epoch in `checkpoint_dir`.
    A recipe asking for precision "auto" trains in the hardware's (`resolve_precision`). With `lora_rank`, the
    model holds the trained LoRA adapters on return: `adapters.merge_adapters` folds them into its weights.

    `progress(n_items, running_loss)` after each batch; `cache_progress(n_items)` returns a callback for the
    caching of the frozen blocks' output; `on_timing` is called once with the frozen pass's and the first batches'
    times (`estimate.timing_due` says when; `clock` reads the time); `stop_after_steps` ends early (for tests)."""
    say = say or (lambda m: None)
    recipe, _ = resolve_precision(recipe)
    n_layers = int(hf_model.config.num_hidden_layers)
    start = max(0, n_layers - recipe.trainable_blocks)
    torch.manual_seed(recipe.seed)
    params = (
        add_adapters(hf_model, start, recipe.lora_rank) if recipe.lora_rank else trainable_parameters(hf_model, start)
    )
    optimizer = torch.optim.AdamW(
        params, lr=recipe.lr, weight_decay=0.0, fused=True
    )  # fused: one kernel per step (measured ~0.2 s a step saved)
    key = checkpoint_key(recipe, train_items)
    state = _load_checkpoint(checkpoint_dir, params, optimizer, key) or TrainState()
    if state.epochs_done:
        say(f"resuming after epoch {state.epochs_done} (checkpoint {checkpoint_dir})")
    if state.epochs_done >= recipe.epochs:
        return state
    pad = int(model_for_tokens.tokenizer.pad_token_id or 0)
    units = training_units(train_items, recipe.batching)
    packed = [pack_group(model_for_tokens, [(t.item, t.target) for t in unit]) for unit in units]
    sizes = [len(unit) for unit in units]
    shared = shared_prefix_length(packed)
    say(
        f"caching the residual entering block {start} for {len(train_items)} items in {len(packed)} sequences "
        f"(blocks 0..{start - 1} frozen)"
    )
    hf_model.eval()  # no dropout anywhere: the build is deterministic
    by_len = sorted(range(len(packed)), key=lambda i: len(packed[i].ids))
    cache_batches = [by_len[i : i + recipe.batch_size] for i in range(0, len(by_len), recipe.batch_size)]
    resid_of: dict[int, Tensor] = {}
    cache_step = cache_progress(len(train_items)) if cache_progress is not None else None
    cache_start = clock()
    for g in cache_batches:
        batch = [packed[i] for i in g]
        ids, pos, mask = collate(batch, pad)
        resid = lower_residual(hf_model, ids, pos, mask, start, recipe.precision)
        for j, i in enumerate(g):
            resid_of[i] = resid[j, : len(packed[i].ids)].clone()
        if cache_step is not None:
            cache_step(sum(sizes[i] for i in g), None)
    last = clock()
    frozen_seconds = last - cache_start
    timed: list[tuple[int, float]] = []  # (items, seconds) of the first batches, until `on_timing` is called
    steps = 0
    for epoch in range(state.epochs_done, recipe.epochs):
        batches = epoch_batches(
            [len(p.ids) for p in packed], recipe.batch_size, recipe.seed, epoch, recipe.batching, sizes
        )
        total, count = 0.0, 0
        for idx in batches:
            batch = [packed[i] for i in idx]
            ids, pos, mask = collate(batch, pad)
            resid = torch.zeros(len(idx), ids.shape[1], resid_of[idx[0]].shape[-1], dtype=resid_of[idx[0]].dtype)
            for j, i in enumerate(idx):
                resid[j, : len(packed[i].ids)] = resid_of[i]
            lls = upper_logliks(hf_model, resid, pos, mask, batch, start, recipe.precision, shared=shared)
            loss = torch.nn.functional.cross_entropy(lls.float(), batch_targets(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(lls)
            total += float(loss.detach()) * n
            count += n
            steps += 1
            if on_timing is not None:
                now = clock()
                timed.append((n, now - last))
                last = now
                if timing_due(len(timed), len(batches), sum(t for _, t in timed)):
                    on_timing(
                        TrainTiming(
                            frozen_seconds=frozen_seconds,
                            frozen_blocks=start,
                            n_layers=n_layers,
                            items_per_epoch=len(train_items),
                            epochs=recipe.epochs - state.epochs_done,
                            batch_items=tuple(k for k, _ in timed),
                            batch_seconds=tuple(t for _, t in timed),
                        )
                    )
                    on_timing = None
            if progress is not None:
                progress(n, total / count)
            if stop_after_steps is not None and steps >= stop_after_steps:
                return state
        state.epochs_done = epoch + 1
        state.losses.append(total / max(count, 1))
        _save_checkpoint(checkpoint_dir, params, optimizer, state, key)
        say(f"epoch {epoch + 1}/{recipe.epochs}: mean train loss {state.losses[-1]:.4f}")
    return state


def load_base_hf(recipe: OrganismRecipe) -> tuple[Any, Any]:
    """A fresh Hugging Face model and tokenizer of the recipe's base model (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if recipe.base == TINY_MODEL:  # the tests' stand-in base (random weights, seed 0 as load_model gives)
        return tiny_hf_model(0)
    folder = checkpoint_folder(recipe.base)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32), AutoTokenizer.from_pretrained(
        str(folder)
    )


@dataclasses.dataclass(frozen=True)
class TokenizerView:
    """A tokenizer seen as a model for `encode_texts` and `render_chat` (the organism's packing needs no weights)."""

    tokenizer: Any
