"""Turn a probe's prompt into the exact string a model sees.

Backends tokenize these strings with ``add_special_tokens=False``, so everything special (BOS,
chat markers) must already be in the string: the chat template puts them there; the plain fallback
adds the BOS token itself.
"""

from __future__ import annotations

from typing import Any


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, prompt: str, system: str | None = None, prefill: str | None = None) -> str:
    """The prompt as the model sees it: the chat template with a generation prompt when the
    tokenizer has one (a template that refuses a system turn gets the system text in the user
    turn), else ``BOS + system + blank line + prompt``; then the prefill (the start of the reply)."""
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # e.g. "System role not supported" (Gemma): fold it into the user turn
            if not system:
                raise
            merged = [{"role": "user", "content": f"{system}\n\n{prompt}"}]
            text = tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
        return text + (prefill or "")
    text = f"{system}\n\n{prompt}" if system else prompt
    bos = getattr(tokenizer, "bos_token", None)
    if bos and not text.startswith(bos):
        text = bos + text
    if prefill:
        text = f"{text}\n{prefill}"
    return text


def join_continuation(context: str, answer: str) -> str:
    """The answer as it follows the context: with a leading space when the context ends in a
    non-space character and the answer does not start with whitespace ("... is" + " Paris"), as is
    (after a newline, e.g. a chat template's assistant header)."""
    if context and answer and not context[-1].isspace() and not answer[0].isspace():
        return " " + answer
    return answer
