"""How long an organism build will take, estimated once from its first training batches: what the frozen blocks
took and what the first batches took per item (`TrainTiming`, recorded by `train`), scaled to the epochs left and
to the acceptance items (`estimate_build`), said in one line with a warning when the build will be long."""

from __future__ import annotations

import dataclasses
import math

# the estimate is made after this fraction of the first epoch's batches or this many seconds of training,
# whichever comes first (and after at least one batch)
FIRST_EPOCH_FRACTION = 0.03
FIRST_SECONDS = 20.0

# a build estimated longer than this gets a warning naming the levers
LONG_BUILD_SECONDS = 15 * 60.0


def timing_due(batches_done: int, batches_in_epoch: int, seconds: float) -> bool:
    """Whether the first `batches_done` batches (taking `seconds`) are enough to estimate from."""
    if batches_done < 1:
        return False
    return (
        batches_done >= math.ceil(FIRST_EPOCH_FRACTION * batches_in_epoch)
        or seconds >= FIRST_SECONDS
        or batches_done >= batches_in_epoch
    )


@dataclasses.dataclass(frozen=True)
class TrainTiming:
    """What a build's training measured by the time it is estimated: the frozen blocks' pass over the training
    sequences and the first batches (items and seconds each)."""

    frozen_seconds: float
    frozen_blocks: int  # blocks the frozen pass ran (0: none, every block is trained)
    n_layers: int
    items_per_epoch: int
    epochs: int  # epochs this run trains (those not finished before a resume)
    batch_items: tuple[int, ...]
    batch_seconds: tuple[float, ...]

    @property
    def seconds_per_item(self) -> float:
        """Training seconds per item over the first batches."""
        return sum(self.batch_seconds) / max(sum(self.batch_items), 1)


@dataclasses.dataclass(frozen=True)
class BuildEstimate:
    """A build's time: spent before training (loading, the frozen blocks), training, acceptance."""

    before_training_seconds: float
    frozen_seconds: float
    train_seconds: float
    acceptance_seconds: float
    epochs: int
    batches: int

    @property
    def total_seconds(self) -> float:
        """The whole build."""
        return self.before_training_seconds + self.train_seconds + self.acceptance_seconds

    def message(self) -> str:
        """The one line a build says."""
        total = f"{self.total_seconds / 60:.0f} min" if self.total_seconds >= 60 else f"{self.total_seconds:.0f} s"
        return (
            f"organism build: about {total} in all (frozen blocks {self.frozen_seconds:.0f} s done; training"
            f" ~{self.train_seconds / 60:.1f} min for {self.epochs} epoch{'s' * (self.epochs != 1)}; acceptance"
            f" ~{self.acceptance_seconds:.0f} s), estimated from the first {self.batches}"
            f" batch{'es' * (self.batches != 1)}"
        )

    def warning(self) -> str | None:
        """A line naming the levers when the build will take longer than `LONG_BUILD_SECONDS`, else None."""
        if self.total_seconds <= LONG_BUILD_SECONDS:
            return None
        return (
            f"warning: this build will take over {LONG_BUILD_SECONDS / 60:.0f} min; to shorten it: --precision"
            " (fp32 where the CPU has no native bf16, `auto` picks it), --epochs, --trainable-blocks (fewer trained"
            " blocks: a shorter step)"
        )


def estimate_build(timing: TrainTiming, before_training_seconds: float, eval_items: int) -> BuildEstimate:
    """The build's time from its first batches: training = seconds per item x items per epoch x epochs;
    acceptance = `eval_items` forwards through every block, each costing what the frozen pass took per item and
    block (or, with no frozen pass, a third of a training step's per-item time: forward ~ 1/3 of forward and
    backward). Rough for acceptance: the frozen pass shares template contexts, the evaluator does not."""
    train_seconds = timing.seconds_per_item * timing.items_per_epoch * timing.epochs
    if timing.frozen_blocks and timing.items_per_epoch:
        per_item = timing.frozen_seconds / timing.items_per_epoch / timing.frozen_blocks * timing.n_layers
    else:
        per_item = timing.seconds_per_item / 3
    return BuildEstimate(
        before_training_seconds=before_training_seconds,
        frozen_seconds=timing.frozen_seconds,
        train_seconds=train_seconds,
        acceptance_seconds=per_item * eval_items,
        epochs=timing.epochs,
        batches=len(timing.batch_items),
    )
