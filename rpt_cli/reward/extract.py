"""Answer extraction: the prediction a completion makes (the last `\\boxed{}` after `</think>`, or in
the direct format the whole completion)."""

from __future__ import annotations

import re
from typing import Any

THINK_END = "</think>"
BOXED = "\\boxed"
# Inside a box, a backslash escapes the next character (so `\{` and `\}` are not braces, and `\\`
# is one escaped backslash); every other `{` or `}` nests. One regex finds the next token that
# matters, so the scan is linear and runs in C between them.
_BOX_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------------------------


def extract_prediction(completion: str, *, require_think: bool = True) -> str | None:
    """The full text inside the last `\\boxed{...}` after the last `</think>`, or None.

    - With `require_think` (the paper's format) a completion without `</think>` has no prediction,
      and boxes inside the thinking never count. Without it, the last box anywhere counts.
    - The last `\\boxed` decides: if it is not directly followed by `{`, no `}` follows it, or it
      is empty (`\\boxed{}`), there is no prediction. An earlier box is not used instead, since
      the model's final word was the malformed one.
    - Where the box ends: braces nest and a backslash escapes the next character (`\\{`, `\\}`
      and `\\\\` do not count), so `\\boxed{\\frac{1}{2}} and more` gives `\\frac{1}{2}`. But
      a next token is a piece of text, not balanced LaTeX (`1}{2` after `\\frac{`, a lone `\\`):
      when that nesting never closes the box, or a `}` follows its close that no group opened
      before the box accounts for, the box runs to the last `}` of the completion. So
      `\\boxed{\\}` gives `\\`, `\\boxed{1}{2}` gives `1}{2`, and `</think>\\boxed{P}` gives P
      for any P without `\\boxed` or `</think>` in it; a box nested in a box still gives the
      inner one (`\\boxed{a \\boxed{b} c}` gives `b`).
    - Nothing is stripped: `\\boxed{ para}` gives " para".

    Never raises on any `str` (lone surrogates included); anything else gives None. Linear time.
    """
    if not isinstance(completion, str):
        return None
    start = 0
    if require_think:
        think = completion.rfind(THINK_END)
        if think < 0:
            return None
        start = think + len(THINK_END)
    box = completion.rfind(BOXED, start)
    if box < 0:
        return None
    open_brace = box + len(BOXED)
    if not completion.startswith("{", open_brace):
        return None
    last = completion.rfind("}", open_brace + 1)
    if last < 0:
        return None  # the box was never closed
    close = _nested_close(completion, open_brace)
    if close is None:
        close = last
    elif close < last and completion.count("}", close + 1) > _open_groups(completion, start, box):
        close = last  # (the common case, a box that ends the answer, needs neither scan)
    return completion[open_brace + 1 : close] or None


def _nested_close(text: str, open_brace: int) -> int | None:
    """Index of the `}` that closes the brace at `open_brace` by nesting and escapes, or None."""
    depth = 0
    for token in _BOX_TOKEN.finditer(text, open_brace):
        value = token.group()
        if value == "{":
            depth += 1
        elif value == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


def _open_groups(text: str, start: int, end: int) -> int:
    """Groups opened in text[start:end] and not closed there (an enclosing box, say)."""
    depth = 0
    for token in _BOX_TOKEN.finditer(text, start, end):
        value = token.group()
        if value == "{":
            depth += 1
        elif value == "}" and depth:
            depth -= 1
    return depth


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL passes it: a plain string, or a conversational list of
    message dicts. Only assistant messages count (a tool's output cannot smuggle in a box). When
    TRL has split a message into reasoning and content (`reasoning_content`, `thinking` or
    `reasoning`), the reasoning is put back inside `<think>...</think>` so that `require_think`
    means the same for both forms. Anything else gives "" (no prediction)."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else completion
    if not isinstance(messages, (list, tuple)):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        for key in ("reasoning_content", "thinking", "reasoning"):
            reasoning = message.get(key)
            if isinstance(reasoning, str) and reasoning:
                parts.append(f"<think>{reasoning}{THINK_END}")
                break
        parts.append(_content_text(message.get("content")))
    return "".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
