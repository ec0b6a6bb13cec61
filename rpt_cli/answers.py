"""The two answer formats: where a completion's prediction is, and the prompt settings each needs.

- `boxed` (the paper's): the model thinks, then writes its guess in `\\boxed{}`; the prediction
  is the text of the last box after `</think>` (`reward.extract_prediction`).
- `direct`: RPT without reasoning, an ablation beside the paper's format. The prompt is the
  context itself (the `direct` template, no chat wrapping) and the completion, as it stands, is
  the prediction: with one new token, the model's own next-token distribution becomes the policy.
  It gives a learning signal to models that cannot reason yet (docs/train.md measures it).

Both are scored by Eq. 3 (and the Appendix A variants) against the same samples. The format is
one setting, `--answer`, shared by `rpt rollout`, `reward`, `train` and `eval`, and recorded
where their outputs say how they were made (rollout metadata, a run's config.yaml, eval reports).
"""

from __future__ import annotations

from rpt_cli import paper
from rpt_cli.errors import UsageError

BOXED = "boxed"
DIRECT = "direct"
ANSWER_FORMATS = (BOXED, DIRECT)
DEFAULT_ANSWER = BOXED

# What each format implies when the user does not say otherwise. The boxed format keeps the
# paper's settings (template v0, the chat template, 8,192 new tokens); the direct format shows
# the model nothing but the context and reads one token of it.
_PROMPT_DEFAULTS: dict[str, dict] = {
    BOXED: {"template": "v0", "chat": True, "max_new_tokens": paper.NEW_TOKENS},
    DIRECT: {"template": "direct", "chat": False, "max_new_tokens": 1},
}


def check_answer(value: str, option: str = "--answer") -> str:
    """`value` if it names an answer format, else a one-line usage error."""
    if value not in ANSWER_FORMATS:
        raise UsageError(f"{option} {value}: choose {' or '.join(ANSWER_FORMATS)}")
    return value


def prompt_defaults(answer: str) -> dict:
    """template, chat and max_new_tokens a format uses unless told otherwise."""
    return dict(_PROMPT_DEFAULTS[answer])


def recorded_answer(record: dict) -> str | None:
    """The answer format a rollout record says it was made in (`rollout.answer`), or None."""
    meta = record.get("rollout")
    value = meta.get("answer") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


__all__ = ["ANSWER_FORMATS", "BOXED", "DEFAULT_ANSWER", "DIRECT", "check_answer", "prompt_defaults", "recorded_answer"]
