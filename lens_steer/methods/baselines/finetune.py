"""The fine-tuning baseline: LoRA (peft) with the later SVE paper's recipe (method.md §8: r 16, alpha 32, dropout
0.1 on every attention and MLP projection, 3 epochs, learning rate 2e-4), seeded, and cached under the model cache
keyed by the base model's weights, the recipe, the seed and the examples.

An example is a plain text (the paper's positive texts: the causal-LM loss over every token) or a (prompt,
completion) pair (the loss over the completion's tokens only, split as the cloze evaluator splits them:
`forward.questions.encode_pair`), as supervised fine-tuning on prompt-completion data does.

The adapter is trained on a freshly loaded base model (its Hugging Face module inside the
TransformerBridge; a bridge is not deep-copied, its capture hooks would keep pointing at the original) and
merged into its weights; that model is returned renamed "<base>+lora-<key>", so steering vectors of the
base model are refused on it. The cache holds only the
adapter (`adapter.safetensors`) and `meta.json` (recipe, seed, per-epoch mean losses, data digest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lens_steer.errors import LensSteerError, ModelError
from lens_steer.files import atomic_folder, json_sha256, write_json
from lens_steer.forward.questions import encode_pair
from lens_steer.model.fingerprint import model_key
from lens_steer.model.load import HookedModel, cache_dir, model_identity
from lens_steer.model.tokens import encode_texts, pad_id
from lens_steer.progress import Progress

FINETUNE_VERSION = 2  # bump when the training loop changes what a recipe produces


@dataclasses.dataclass(frozen=True)
class LoraRecipe:
    """Everything that shapes the adapter besides the data and the seed (defaults: the paper's)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: str = (
        "all-projections"  # every linear layer but the output head: attention q/k/v/o and MLP gate/up/down
    )
    epochs: int = 3
    lr: float = 2e-4
    batch_size: int = 4
    max_length: int = 512
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LensSteerError(f"LoRA recipe: {name} must be a positive integer (got {value!r})")
        if not 0.0 <= self.dropout < 1.0 or not self.lr > 0 or self.weight_decay < 0:
            raise LensSteerError(
                f"LoRA recipe: need 0 <= dropout < 1, lr > 0, weight_decay >= 0 (got {self.dropout}, {self.lr}, "
                f"{self.weight_decay})"
            )

    def to_json(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuned model with where its adapter lives and how its training went."""

    model: HookedModel
    key: str
    folder: Path
    trained: bool  # False when the adapter was read from the cache
    epoch_losses: list[float]
    meta: dict[str, Any]


Example = str | tuple[str, str]  # a plain text, or a (prompt, completion) pair whose completion alone is learnt


def texts_digest(texts: Sequence[Example]) -> str:
    """A digest of the training examples, in order."""
    rows = [t if isinstance(t, str) else list(t) for t in texts]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def example_tokens(model: HookedModel, example: Example) -> tuple[list[int], list[bool]]:
    """An example's token ids and, per token, whether the loss reads it: every token of a plain text, the
    completion's tokens of a (prompt, completion) pair (the evaluator's split, the prompt's trailing whitespace
    kept on the prompt)."""
    if isinstance(example, str):
        ids = encode_texts(model, [example])[0]
        return ids, [True] * len(ids)
    prompt, completion = example
    head, tail = encode_pair(model, prompt, completion, move_trailing_whitespace=False)
    if not tail:
        raise LensSteerError(f"fine-tuning example has an empty completion (prompt ends {prompt[-40:]!r})")
    return head + tail, [False] * len(head) + [True] * len(tail)


def finetune_key(model: HookedModel, texts: Sequence[Example], recipe: LoraRecipe, seed: int) -> str:
    """The cache key: base weights, recipe, seed, texts and the training code's version."""
    payload = {
        "v": FINETUNE_VERSION,
        "base": model_key(model),  # the base model's name and weights fingerprint
        "recipe": recipe.to_json(),
        "seed": int(seed),
        "texts": texts_digest(texts),
    }
    return json_sha256(payload, 20)


def _hf_module(model: HookedModel) -> Any:
    hf = getattr(model, "original_model", None)
    if hf is None:
        raise ModelError(
            "the fine-tuning baseline needs a TransformerBridge model (TL 4.x load_model); this model has no "
            "Hugging Face module"
        )
    return hf


def projection_names(hf: Any) -> list[str]:
    """Full names of every linear layer of a Hugging Face causal LM except its output head (and anything inside it).

    peft's own "all-linear" finds the head by name, which fails once TransformerBridge has wrapped it."""
    head = hf.get_output_embeddings()
    inside_head = {id(m) for m in head.modules()} if head is not None else set()
    return [name for name, m in hf.named_modules() if isinstance(m, torch.nn.Linear) and id(m) not in inside_head]


def _lora_config(recipe: LoraRecipe, hf: Any) -> Any:
    from peft import LoraConfig

    if recipe.target_modules != "all-projections":
        raise LensSteerError(f"LoRA recipe: unknown target_modules {recipe.target_modules!r}; use 'all-projections'")
    names = projection_names(hf)
    if not names:
        raise ModelError("found no linear projection to adapt in this model")
    return LoraConfig(
        r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout, target_modules=names, task_type="CAUSAL_LM"
    )


def _batches(
    model: HookedModel, texts: Sequence[Example], recipe: LoraRecipe, order: list[int], device: torch.device
) -> list[dict[str, torch.Tensor]]:
    encoded = [example_tokens(model, t) for t in texts]
    ids = [row[: recipe.max_length] for row, _ in encoded]
    learnt = [read[: recipe.max_length] for _, read in encoded]
    out = []
    for start in range(0, len(order), recipe.batch_size):
        rows = order[start : start + recipe.batch_size]
        width = max(len(ids[i]) for i in rows)
        tokens = torch.full((len(rows), width), pad_id(model), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        read = torch.zeros((len(rows), width), dtype=torch.bool)
        for j, i in enumerate(rows):
            tokens[j, : len(ids[i])] = torch.tensor(ids[i])
            mask[j, : len(ids[i])] = 1
            read[j, : len(ids[i])] = torch.tensor(learnt[i])
        labels = tokens.masked_fill(~read, -100)
        out.append({"input_ids": tokens.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)})
    return out


def train_lora(
    model: HookedModel, texts: Sequence[Example], recipe: LoraRecipe, seed: int, progress: Progress | None = None
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train a LoRA adapter on `model` with the causal-LM loss over the learnt tokens of each example (`Example`),
    then merge it into `model`'s weights: **`model` is changed in place** (pass a freshly loaded one).

    Returns the adapter's state dict and the mean loss of each epoch. Batches are reshuffled every epoch by
    a generator seeded with `seed`; the adapter's initialisation and dropout draw from torch's global
    generator, seeded likewise and restored afterwards."""
    from peft import get_peft_model, get_peft_model_state_dict

    if not texts:
        raise LensSteerError("no texts to fine-tune on; pass texts or (prompt, completion) pairs of train items")
    hf = _hf_module(model)
    device = next(iter(hf.parameters())).device
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(hf, _lora_config(recipe, hf))
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        shuffle = torch.Generator().manual_seed(seed)
        peft_model.train()
        for _ in range(recipe.epochs):
            order = torch.randperm(len(texts), generator=shuffle).tolist()
            total, steps = 0.0, 0
            for batch in _batches(model, texts, recipe, order, device):
                loss = peft_model(**batch).loss
                loss.backward()
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                total += float(loss.detach())
                steps += 1
                if progress is not None:
                    progress(int(batch["input_ids"].shape[0]))
            losses.append(total / steps)
    peft_model.eval()
    state = {k: v.detach().cpu().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    peft_model.merge_and_unload()
    _finish(model)
    return state, losses


def apply_adapter(model: HookedModel, state: dict[str, torch.Tensor], recipe: LoraRecipe) -> None:
    """Merge a stored adapter into `model`'s weights, in place."""
    from peft import get_peft_model, set_peft_model_state_dict

    hf = _hf_module(model)
    device = next(iter(hf.parameters())).device
    with torch.random.fork_rng(devices=[]):
        peft_model = get_peft_model(hf, _lora_config(recipe, hf))
    result = set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in state.items()})
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise LensSteerError(
            f"stored LoRA adapter does not fit this model ({len(unexpected)} unexpected weights, e.g. "
            f"{unexpected[0]}); delete the cache folder"
        )
    peft_model.eval()
    peft_model.merge_and_unload()
    _finish(model)


def _finish(model: HookedModel) -> None:
    model.eval()  # type: ignore[attr-defined]
    for p in model.parameters():  # type: ignore[attr-defined]
        p.requires_grad_(False)
    with torch.inference_mode():  # one forward drops what the training passes left captured in the blocks
        model(
            torch.tensor([[pad_id(model)]], device=next(iter(model.parameters())).device)  # type: ignore[attr-defined]
        )


def finetuned_model(
    load_base: Callable[[], HookedModel],
    texts: Sequence[Example],
    *,
    recipe: LoraRecipe | None = None,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """A freshly loaded base model (`load_base()`), LoRA-fine-tuned on `texts` (plain texts or (prompt, completion)
    pairs): the adapter is read from
    `cache` (default `<model cache>/finetune`) when this (base weights, recipe, seed, texts) was trained
    before, else trained and stored there atomically. Models the caller holds are never changed."""
    from safetensors.torch import load_file, save_file

    recipe = recipe or LoraRecipe()
    texts = list(texts)
    model = load_base()
    key = finetune_key(model, texts, recipe, seed)
    root = Path(cache) if cache is not None else cache_dir() / "finetune"
    folder = root / key
    base = model_identity(model).name
    if (folder / "meta.json").is_file() and (folder / "adapter.safetensors").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        apply_adapter(model, load_file(str(folder / "adapter.safetensors")), recipe)
        trained = False
    else:
        state, losses = train_lora(model, texts, recipe, seed, progress=progress)
        meta = {
            "base_model": base,
            "recipe": recipe.to_json(),
            "seed": int(seed),
            "n_texts": len(texts),
            "texts_sha256": texts_digest(texts),
            "epoch_losses": losses,
            "adapter_weights": len(state),
            "finetune_version": FINETUNE_VERSION,
        }
        with atomic_folder(folder, keep_existing=True) as tmp:  # another process may store the same key first
            save_file(state, str(tmp / "adapter.safetensors"))
            write_json(tmp / "meta.json", meta)
        trained = True
    model.cfg.model_name = f"{base}+lora-{key[:12]}"  # type: ignore[attr-defined]
    return FinetuneResult(model, key, folder, trained, list(meta["epoch_losses"]), meta)
