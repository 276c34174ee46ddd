"""Applying steering vectors through named hook points, scoped by a context manager."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.models import HookedModel, check_hook_name
from lens_steer.vectors import SteeringVector

PositionMode = Literal["all", "prompt", "generated"]
POSITION_MODES: tuple[str, ...] = ("all", "prompt", "generated")


@dataclasses.dataclass
class _AddAtPositions:
    """Hook adding `delta` at the positions selected by `mode`, tracking prompt/generated positions.

    A call is read as: a KV-cache step (one new token after a known prefix), a re-fed sequence one token
    longer than the last (generation without KV cache), or else a new prompt. Prompt positions are those
    before the prompt length (given, or the first call's length); with left padding every row's prompt
    ends at the same padded length, so this is right for batches too.
    """

    delta: Float[Tensor, " d_model"]
    mode: PositionMode
    prompt_length: int | None = None
    _prompt_len: int | None = None
    _seen: int = 0
    calls: int = 0

    def reset(self) -> None:
        """Forget the current sequence; the next call starts a new prompt."""
        self._prompt_len, self._seen = None, 0

    def _positions(self, length: int) -> Tensor | slice:
        if self._prompt_len is not None and length == 1 and self._seen >= self._prompt_len:
            start, self._seen = self._seen, self._seen + 1  # KV-cache step
        elif self._prompt_len is not None and length == self._seen + 1:
            start, self._seen = 0, length  # re-fed sequence, no KV cache
        else:
            self._prompt_len = self.prompt_length if self.prompt_length is not None else length
            start, self._seen = 0, length
        absolute = torch.arange(start, start + length)
        generated = absolute >= self._prompt_len
        return generated if self.mode == "generated" else ~generated

    def __call__(self, tensor: Tensor, *, hook: Any) -> Tensor:
        self.calls += 1
        delta = self.delta.to(device=tensor.device, dtype=tensor.dtype)
        if self.mode == "all":
            return tensor + delta
        selected = self._positions(tensor.shape[1]).to(tensor.device)
        return tensor + selected[None, :, None].to(tensor.dtype) * delta


@dataclasses.dataclass(frozen=True)
class SteeringHandle:
    """What an active `steer` block added: `{hook name: hook function}`."""

    hooks: dict[str, _AddAtPositions]

    def reset(self) -> None:
        """Start a new sequence for position tracking (needed only between separate generations)."""
        for fn in self.hooks.values():
            fn.reset()


def combined_deltas(model: HookedModel, vectors: Sequence[tuple[SteeringVector, float]]) -> dict[str, Tensor]:
    """`{hook name: sum of coeff * direction}` after checking every vector fits `model`."""
    if not vectors:
        raise VectorError("steer() needs at least one (vector, coefficient) pair")
    deltas: dict[str, Tensor] = {}
    for vec, coeff in vectors:
        if not isinstance(vec, SteeringVector):
            raise VectorError(f"expected a SteeringVector, got {type(vec).__name__}")
        if not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
            raise VectorError(f"steering coefficient must be a finite number, got {coeff!r}")
        vec.check_compatible(model)
        for layer, name in vec.hook_names.items():
            check_hook_name(model, name)
            d = vec.directions[layer] * float(coeff)
            deltas[name] = deltas[name] + d if name in deltas else d
    return deltas


@contextmanager
def steer(
    model: HookedModel,
    vectors: Sequence[tuple[SteeringVector, float]],
    *,
    positions: PositionMode = "all",
    prompt_length: int | None = None,
) -> Iterator[SteeringHandle]:
    """Add `coeff * direction` of every (vector, coeff) at its hook points while the block is open.

    `positions`: "all" (every position), "prompt" (prompt tokens only) or "generated" (generated tokens only).
    Hooks are removed on exit, also after an exception; hooks added by others are left alone.
    """
    if positions not in POSITION_MODES:
        raise VectorError(f"unknown position mode {positions!r}; use one of {', '.join(POSITION_MODES)}")
    deltas = combined_deltas(model, vectors)
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    fns = {name: _AddAtPositions(d.to(device), positions, prompt_length) for name, d in deltas.items()}
    with model.hooks(fwd_hooks=list(fns.items())):
        yield SteeringHandle(fns)
