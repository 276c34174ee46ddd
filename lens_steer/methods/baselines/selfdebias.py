"""Self-Debias as Schick, Udupa & Schütze (2021) define it, adapted to scoring (`self-debias-schick`).

At every scored position the model's next-token distribution p(w | x) is compared with the distributions
under six bias-describing prefixes, p_y(w | y + x). Tokens the prefixes make *more* likely are damped:

    delta(w) = max(0, max_y p_y(w) - p(w))
    alpha(w) = max(epsilon, exp(-decay * delta(w)))
    p~(w)    = alpha(w) p(w) / sum_v alpha(v) p(v)

with decay 50 and epsilon 0.01 (the minimum factor), as in the authors' `SelfDebiasingLogitsProcessor`
(their `compute_loss_self_debiasing` scores texts the same way). A text, answer option or letter is then
scored by the log of p~ of its tokens. This is *not* the later SVE paper's "Self-Debias" (candidate
generation judged by the model itself), which lens_steer calls `self-debias`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.continuation import next_token_logprobs
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress

SCHICK_PREFIXES: tuple[str, ...] = (
    "The following text contains rude, disrespectful, or unreasonable language:\n",
    "The following text contains very hateful, aggressive, disrespectful language:\n",
    "The following text contains sexually explicit language:\n",
    "The following text contains a threat:\n",
    "The following text contains negative or hateful language targeting someone because of their identity:\n",
    "The following text contains swear words, curse words, or other obscene or profane language:\n",
)
SCHICK_DECAY = 50.0
SCHICK_EPSILON = 0.01


def schick_rescale(
    logp_regular: Float[Tensor, "*pos vocab"],
    logp_biased: Float[Tensor, "k *pos vocab"],
    *,
    decay: float = SCHICK_DECAY,
    epsilon: float = SCHICK_EPSILON,
) -> Float[Tensor, "*pos vocab"]:
    """Log of the self-debiased distribution p~ from the regular and the k prefixed log-distributions."""
    if logp_biased.shape[1:] != logp_regular.shape:
        raise LensSteerError(
            f"biased distributions {tuple(logp_biased.shape)} do not match the regular one {tuple(logp_regular.shape)}"
        )
    p = logp_regular.double().exp()
    p_biased = logp_biased.double().exp().amax(dim=0)
    delta = (p_biased - p).clamp_min(0.0)
    alpha = torch.exp(-decay * delta).clamp_min(epsilon)
    q = p * alpha
    return torch.log(q / q.sum(dim=-1, keepdim=True)).to(logp_regular.dtype)


def schick_continuation_logprobs(
    model: HookedModel,
    prompts: Sequence[Sequence[Sequence[int]]],
    continuations: Sequence[Sequence[int]],
    *,
    decay: float = SCHICK_DECAY,
    epsilon: float = SCHICK_EPSILON,
    chunk: int = 8,
    max_batch: int = 16,
    progress: Progress | None = None,
    full: bool = False,
) -> list[Tensor]:
    """Self-debiased log-probabilities of each continuation's tokens (`[n_cont]`), or with `full` the
    whole rescaled distributions at their positions (`[n_cont, vocab]`).

    `prompts[i]` holds the regular prompt's ids first, then one prompt per bias prefix; every one of them
    is followed by `continuations[i]`. Distributions are read `chunk` continuations at a time (a whole
    vocabulary row per scored token); progress counts continuations."""
    if len(prompts) != len(continuations):
        raise LensSteerError(f"{len(prompts)} prompt sets but {len(continuations)} continuations")
    out: list[Tensor] = []
    for start in range(0, len(continuations), chunk):
        block = range(start, min(start + chunk, len(continuations)))
        flat_prompts = [p for i in block for p in prompts[i]]
        flat_conts = [continuations[i] for i in block for _ in prompts[i]]
        if any(len(prompts[i]) < 2 for i in block):
            raise LensSteerError(
                "Self-Debias needs the regular prompt and at least one prefixed prompt per continuation"
            )
        dists = next_token_logprobs(model, flat_prompts, flat_conts, max_batch=max_batch)
        offset = 0
        for i in block:
            k = len(prompts[i])
            regular, biased = dists[offset], torch.stack(dists[offset + 1 : offset + k])
            offset += k
            rescaled = schick_rescale(regular, biased, decay=decay, epsilon=epsilon)
            if full:
                out.append(rescaled)
                continue
            cont = torch.tensor(list(continuations[i]), dtype=torch.long)
            out.append(rescaled[torch.arange(len(cont)), cont])
        if progress is not None:
            progress(len(block))
    return out
