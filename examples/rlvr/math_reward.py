"""A verifiable math reward for RLVR after RPT: 1.0 when the completion's final answer equals the
reference answer mathematically (Hugging Face's `math-verify`: `\\frac{1}{2}`, `0.5` and `\\boxed{2/4}`
agree), else 0.0.

A TRL reward function: TRL calls it with `prompts`, `completions`, `completion_ids` and every
column of the data set, one entry per completion; it reads the `answer` column. Use it as
`trl grpo --reward_funcs math_reward.math_reward` (run.sh beside this file) or, on RPT samples,
`rpt train --reward math_reward:math_reward`. Needs `pip install 'rpt[rlvr]'` (math-verify).

Reasoning models think first: only the text after the last `</think>` is read when there is one,
so a guess made while thinking does not count. math-verify takes the last `\\boxed{}` (or, without
one, the last number or LaTeX expression) of that text as the answer.
"""

from __future__ import annotations

import threading

THINK_END = "</think>"


def completion_text(completion) -> str:
    """The text of a completion: a string, or TRL's conversational form, a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content") or "" for message in completion)


def final_part(text: str) -> str:
    """What comes after the reasoning: the text after the last `</think>`, or all of it."""
    return text.rpartition(THINK_END)[2] if THINK_END in text else text


def verify_answer(completion: str, answer: str) -> float:
    """1.0 when `completion` ends with an answer equal to `answer` (math-verify), else 0.0."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify times out through signal.alarm, which works in the main thread only
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    # the reference is a bare expression ("42", "\\frac{1}{2}", "x^2+1"): read it as LaTeX math
    gold = parse(
        f"${answer}$",
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout,
    )
    if not gold:
        raise ValueError(f"math-verify cannot read the reference answer {answer!r}")
    guess = parse(final_part(completion), parsing_timeout=timeout)
    return 1.0 if guess and verify(gold, guess, timeout_seconds=timeout) else 0.0


def math_reward(completions, answer, **kwargs) -> list[float]:
    """TRL's reward-function signature: one reward per completion, against its row's `answer`."""
    return [verify_answer(completion_text(c), str(a)) for c, a in zip(completions, answer, strict=True)]
