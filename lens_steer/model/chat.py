"""Rendering prompts with a tokenizer's chat template: a system and a user message, ready for the reply."""

from __future__ import annotations

from typing import Any

from lens_steer.errors import LensSteerError


def has_chat_template(tokenizer: Any) -> bool:
    """Whether `tokenizer` can render chat messages through its own template."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


SYSTEM_PROMPT_MODES: tuple[str, ...] = ("system_turn", "folded_into_user", "plain_text")
_SYSTEM_PROBE = "lens-steer system-turn probe"


def system_prompt_mode(tokenizer: Any) -> str:
    """How `render_chat` passes a system prompt with this tokenizer (recorded in pair provenance).

    "system_turn": the chat template renders the system message (Llama 3, Qwen; Gemma 3's template itself
    moves it into the first user turn). "folded_into_user": the template refuses a system message (raises,
    as Mistral's and Gemma 2's do) or renders without it (early Phi-3), so the system text is prepended to
    the user message, "{system}\\n\\n{user}". "plain_text": no chat template."""
    if not has_chat_template(tokenizer):
        return "plain_text"
    probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hello"}]
    try:
        out = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # jinja2's TemplateError from raise_exception(...), whatever its wording
        return "folded_into_user"
    return "system_turn" if isinstance(out, str) and _SYSTEM_PROBE in out else "folded_into_user"


def render_chat(tokenizer: Any, system: str | None, user: str) -> str:
    """One prompt: a system (optional) and a user message, ready for the assistant's reply.

    With a chat template: `tokenizer.apply_chat_template(messages, tokenize=False,
    add_generation_prompt=True)`; where `system_prompt_mode` says the template refuses or drops a system
    message, the system text is prepended to the user message instead ("{system}\\n\\n{user}"). Without one
    (tokenizer None or no `chat_template`) the plain-text fallback is "{system}\\n\\n{user}\\n", or "{user}\\n"
    when there is no system message.
    """
    if not has_chat_template(tokenizer):
        return f"{system}\n\n{user}\n" if system else f"{user}\n"
    if system and system_prompt_mode(tokenizer) == "folded_into_user":
        messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
    else:
        messages = [{"role": "user", "content": user}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
    out = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(out, str):
        raise LensSteerError(f"apply_chat_template returned {type(out).__name__}, expected str")
    return out
