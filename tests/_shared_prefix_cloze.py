"""The shared-prefix cloze path, kept as a test oracle: each prompt runs once and its Hugging Face KV cache serves
every option (`shared_prefix.run_shared_prefix`), a third way to the cloze log-likelihoods that the engine computes
over its prefix tree and in length buckets. Models taking a KV cache only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lens_steer.forward.engine import Unembed, final_residual
from lens_steer.forward.shared_prefix import run_shared_prefix
from lens_steer.model.architectures import hf_config, sliding_window
from lens_steer.model.tokens import length_batches, model_device, pad_batch, pad_id


def shared_prefix_cloze(
    model: Any,
    prompt_ids: Sequence[list[int]],
    cont_ids: Sequence[Sequence[list[int]]],
    *,
    max_batch: int = 16,
    max_tokens: int = 3072,
) -> list[list[np.ndarray]]:
    """Per question, per option: the log-probs of the option's tokens after its prompt."""
    device = model_device(model)
    unembed = Unembed(model)
    out: list[list[np.ndarray]] = [[] for _ in prompt_ids]
    side = "left" if sliding_window(hf_config(model)) is not None else "right"  # a window would count the pads
    for batch_idx in length_batches([len(p) for p in prompt_ids], max_batch=max_batch, max_tokens=max_tokens):
        prompts = pad_batch([prompt_ids[i] for i in batch_idx], pad_id=pad_id(model), padding_side=side, device=device)
        k = [len(cont_ids[i]) for i in batch_idx]
        options = [o for i in batch_idx for o in cont_ids[i]]
        conts = pad_batch(options, pad_id=pad_id(model), padding_side="right", device=device)
        owner = torch.tensor([j for j, n in enumerate(k) for _ in range(n)], device=device)
        with torch.inference_mode():
            resid_prompt, shared = run_shared_prefix(
                lambda cache: final_residual(
                    model, prompts.tokens, {"past_key_values": cache, **prompts.forward_kwargs()}
                ),
                prompts.attention_mask,
            )
            last_prompt = resid_prompt[torch.arange(len(batch_idx), device=device), prompts.last_index]
            resid_cont = final_residual(model, conts.tokens, shared.row_kwargs(owner, conts.attention_mask))
            for r, o in enumerate(options):  # the prompt's last position predicts the option's first token
                sel = torch.cat([last_prompt[owner[r]][None], resid_cont[r, : len(o) - 1]])
                logp = unembed.log_probs(sel)
                vals = logp[torch.arange(len(o), device=device), torch.tensor(o, device=device)].cpu().numpy()
                out[batch_idx[int(owner[r])]].append(vals)
    return out
