"""Applying steering vectors through named hook points, scoped by a context manager."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, Protocol, Union, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.model.load import HookedModel, check_hook_name
from lens_steer.steering.interventions import Additive, Intervention, OptimizedVector
from lens_steer.steering.vectors import SteeringVector

PositionMode = Literal["all", "prompt", "generated"]


@runtime_checkable
class Steerable(Protocol):
    """What `steer` needs of a vector (lens_steer.steering.vectors.SteeringVector is one): a direction per layer, the
    hook point of each, and a check that it fits a model."""

    directions: Mapping[int, Tensor]

    @property
    def hook_names(self) -> dict[int, str]: ...

    def check_compatible(self, model: HookedModel) -> None: ...


POSITION_MODES: tuple[str, ...] = ("all", "prompt", "generated")


# the first block's input (token embeddings): where each forward pass's positions are classified; fires on every
# backend (TL 3's rotary HookedTransformer skips hook_embed)
EMBED_HOOK = "blocks.0.hook_resid_pre"


@dataclasses.dataclass
class PositionTracker:
    """Which absolute positions a forward pass covers and where its prompt ends, read at the token embeddings.

    A call is: a KV-cache step (one new token after a known prefix), a re-fed sequence (generation without KV
    cache: one token longer than the last call *and* beginning with exactly the same token embeddings), or else
    a new prompt. Prompt positions are those before the prompt length (given, or the new prompt's length); with
    left padding every row's prompt ends at the same padded length, so this is right for batches too.
    """

    prompt_length: int | None = None
    prompt_len: int | None = None  # the current sequence's prompt length
    start: int = 0  # absolute position of the current call's first token
    seen: int = 0  # positions of the current sequence so far
    last: Tensor | None = None  # the token embeddings of the last prompt or re-fed sequence

    def reset(self) -> None:
        """Forget the current sequence; the next call starts a new prompt."""
        self.prompt_len, self.start, self.seen, self.last = None, 0, 0, None

    def _continues(self, embeds: Tensor) -> bool:
        """Whether `embeds` is the last sequence re-fed with one more token."""
        last = self.last
        return (
            self.prompt_len is not None
            and last is not None
            and embeds.shape[1] == self.seen + 1
            and embeds.shape[0] == last.shape[0]
            and last.shape[1] >= self.seen
            and torch.equal(embeds[:, : self.seen], last[:, : self.seen])
        )

    def __call__(self, tensor: Tensor, *, hook: Any) -> None:
        length = tensor.shape[1]
        if self.prompt_len is not None and length == 1 and self.seen >= self.prompt_len:
            self.start, self.seen = self.seen, self.seen + 1  # KV-cache step
        elif self._continues(tensor):
            self.start, self.seen, self.last = 0, length, tensor.detach().clone()  # re-fed sequence, no KV cache
        else:
            self.prompt_len = self.prompt_length if self.prompt_length is not None else length
            self.start, self.seen, self.last = 0, length, tensor.detach().clone()

    def generated(self, length: int) -> Tensor:
        """`[length]` bools: which positions of the current call are generated (at or after the prompt's end)."""
        absolute = torch.arange(self.start, self.start + length)
        return absolute >= (self.prompt_len if self.prompt_len is not None else length)


Edit = Callable[[Tensor], Tensor]


@dataclasses.dataclass
class _EditAtPositions:
    """Hook applying `edits` in order at the positions selected by `mode` ("all", or by `tracker`: prompt or
    generated); consecutive additive edits arrive already summed into one delta."""

    edits: list[Edit]
    mode: PositionMode
    tracker: PositionTracker | None = None
    calls: int = 0

    def __call__(self, tensor: Tensor, *, hook: Any) -> Tensor:
        self.calls += 1
        out = tensor
        for edit in self.edits:
            out = edit(out)
        if self.mode == "all" or self.tracker is None:
            return out
        generated = self.tracker.generated(tensor.shape[1])
        selected = (generated if self.mode == "generated" else ~generated).to(tensor.device)
        return torch.where(selected[None, :, None], out, tensor)


@dataclasses.dataclass(frozen=True)
class _AddDelta:
    """x + delta (the sum of every additive edit at one hook point)."""

    delta: Float[Tensor, " d_model"]

    def __call__(self, x: Tensor) -> Tensor:
        return x + self.delta.to(device=x.device, dtype=x.dtype)


@dataclasses.dataclass(frozen=True)
class SteeringHandle:
    """What an active `steer` block added: `{hook name: hook function}`."""

    hooks: dict[str, _EditAtPositions]
    tracker: PositionTracker | None = None

    def reset(self) -> None:
        """Start a new sequence for position tracking (needed only between separate generations)."""
        if self.tracker is not None:
            self.tracker.reset()


SteerSpec = Union[Intervention, "tuple[Steerable, float]"]


def as_interventions(specs: Sequence[SteerSpec] | Intervention) -> list[Intervention]:
    """Interventions from a mix of interventions and (vector, coefficient) pairs (each pair an `Additive`)."""
    if isinstance(specs, Intervention):
        return [specs]
    out: list[Intervention] = []
    for spec in specs:
        if isinstance(spec, Intervention):
            out.append(spec)
            continue
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise VectorError(f"steer() takes interventions or (vector, coefficient) pairs, got {type(spec).__name__}")
        vec, coeff = spec
        if not isinstance(vec, SteeringVector):
            raise VectorError(f"expected a SteeringVector, got {type(vec).__name__}")
        if not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
            raise VectorError(f"steering coefficient must be a finite number, got {coeff!r}")
        out.append(Additive.of(vec, float(coeff)))
    if not out:
        raise VectorError("steer() needs at least one intervention or (vector, coefficient) pair")
    return out


def hook_edits(model: HookedModel, interventions: Sequence[Intervention]) -> dict[str, list[Edit]]:
    """`{hook name: edits in order}` after checking every intervention fits `model`; additive edits that follow
    each other at one hook are summed into one delta (as adding them one by one would, up to rounding)."""
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    plain: dict[str, list[Any]] = {}
    for iv in interventions:
        iv.check_compatible(model)
        for layer, name in iv.hook_names.items():
            check_hook_name(model, name)
            edits = plain.setdefault(name, [])
            if type(iv) in (Additive, OptimizedVector):
                d = (iv.vector.directions[layer] * float(iv.coeff)).to(device)  # type: ignore[attr-defined]
                if edits and isinstance(edits[-1], Tensor):
                    edits[-1] = edits[-1] + d
                else:
                    edits.append(d)
            else:
                edits.append(functools.partial(iv.edit, layer))
    return {name: [_AddDelta(e) if isinstance(e, Tensor) else e for e in edits] for name, edits in plain.items()}


def combined_deltas(model: HookedModel, vectors: Sequence[tuple[Steerable, float]]) -> dict[str, Tensor]:
    """`{hook name: sum of coeff * direction}` after checking every vector fits `model`."""
    edits = hook_edits(model, as_interventions(vectors))
    return {name: e[0].delta for name, e in edits.items()}  # type: ignore[attr-defined]


@contextmanager
def steer(
    model: HookedModel,
    interventions: Sequence[SteerSpec] | Intervention,
    *,
    positions: PositionMode = "all",
    prompt_length: int | None = None,
) -> Iterator[SteeringHandle]:
    """Apply every intervention (or `coeff * direction` of every (vector, coeff) pair) at its hook points while
    the block is open.

    `positions`: "all" (every position), "prompt" (prompt tokens only) or "generated" (generated tokens only).
    Hooks are removed on exit, also after an exception; hooks added by others are left alone.
    """
    if positions not in POSITION_MODES:
        raise VectorError(f"unknown position mode {positions!r}; use one of {', '.join(POSITION_MODES)}")
    edits = hook_edits(model, as_interventions(interventions))
    tracker = PositionTracker(prompt_length) if positions != "all" else None
    if tracker is not None:
        check_hook_name(model, EMBED_HOOK)  # positions are classified from the token embeddings
    fns = {name: _EditAtPositions(e, positions, tracker) for name, e in edits.items()}
    track = [(EMBED_HOOK, tracker)] if tracker is not None else []
    with model.hooks(fwd_hooks=[*track, *fns.items()]):
        yield SteeringHandle(fns, tracker)
