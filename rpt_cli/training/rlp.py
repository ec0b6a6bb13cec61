"""RLP's information-gain reward (arXiv 2510.01265) for `rpt train --objective rlp` and
`rpt eval --mode gain`.

A thought z is sampled after the context (the `thought` template: the context, then `<think>`);
it ends at its first `</think>` (or where the completion ends, and `</think>` is appended). The
true next token x_t (the target's first token in the policy's tokens) is then teacher-forced:

    reward(z) = log p_θ(x_t | x_<t, <think> z </think>) − log p_teacher(x_t | x_<t)

with the policy θ for the first term and, in training, an EMA copy of the policy for the
no-thought baseline (`EmaTeacher`); `rpt eval` uses the model itself for both. Both terms are
computed without gradients: the reward is a number, and GRPO's loss reaches the policy only
through the thought's tokens (`RLPTrainer` masks what follows the thought).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rpt_cli.forward import pad_token_id
from rpt_cli.prompts import plain_token_ids
from rpt_cli.tokens import DocTokenizer, token_byte_table
from rpt_cli.training.objectives import THOUGHT_CLOSE

TEACHER_FILE = "rlp_teacher.pt"  # the EMA teacher's weights, in every checkpoint of an rlp run


class ThoughtSplitter:
    """Where the thought ends in a completion's tokens: after the token that completes the first
    `</think>`, or at the completion's end (stop tokens excluded) when it never closes."""

    def __init__(self, tokenizer, stop_ids: Sequence[int] = (), closer: str = THOUGHT_CLOSE):
        self.tokenizer = tokenizer
        self.closer = closer.encode("utf-8")
        self.closer_ids = plain_token_ids(tokenizer, closer)
        self.stop_ids = frozenset(stop_ids)
        self._table = token_byte_table(tokenizer)

    def _bytes(self, token_id: int) -> bytes:
        table = self._table
        if table is not None and 0 <= token_id < len(table) and table[token_id] is not None:
            return table[token_id]
        return self.tokenizer.decode([token_id]).encode("utf-8", "replace")

    def split(self, ids: Sequence[int]) -> tuple[int, bool]:
        """(tokens of the thought, its closer included when generated; whether it was generated)."""
        ids = list(ids)
        while ids and ids[-1] in self.stop_ids:
            ids.pop()
        text, ends = b"", []
        for token_id in ids:
            text += self._bytes(token_id)
            ends.append(len(text))
        at = text.find(self.closer)
        if at < 0:
            return len(ids), False
        stop = at + len(self.closer)
        return next(k + 1 for k, end in enumerate(ends) if end >= stop), True

    def is_empty(self, ids: Sequence[int]) -> bool:
        """Whether the completion closes the thought before writing anything (RLP's thoughts have
        at least one token)."""
        ids = list(ids)
        while ids and ids[-1] in self.stop_ids:
            ids.pop()
        text = b"".join(self._bytes(i) for i in ids[: len(self.closer)])  # a token holds at least a byte
        return not ids or text.startswith(self.closer)

    def thought_ids(self, ids: Sequence[int]) -> list[int]:
        """The thought as scored: its own tokens, then the closer's when it did not close itself."""
        length, closed = self.split(ids)
        return list(ids[:length]) + ([] if closed else self.closer_ids)


@dataclass(frozen=True)
class NextToken:
    """A sample's context and true next token(s) in the policy's tokens."""

    context_ids: list[int]  # the tokenizer's special prefix (e.g. BOS), then the context's tokens
    target_ids: list[int]


class InformationGain:
    """The information gain of thoughts, scored in batched teacher-forced forward passes."""

    def __init__(
        self, tokenizer, builder, *, max_context_tokens: int, stop_ids: Sequence[int] = (), batch_size: int = 8
    ):
        self.tokenizer = tokenizer
        self.builder = builder  # builds and encodes the thought prompts (`thought` template)
        self.doc = DocTokenizer(tokenizer)
        self.splitter = ThoughtSplitter(tokenizer, stop_ids)
        self.max_context_tokens = max_context_tokens
        self.batch_size = batch_size
        self.pad_id = pad_token_id(tokenizer)
        self._prompt_ids: dict[str, list[int]] = {}

    def next_token(self, context: str, target: str, boundaries: Sequence[int]) -> NextToken | None:
        """The context's tokens and the target's first token (up to its first boundary), tokenized
        together as in the document; None when the context does not end on a token boundary."""
        if not boundaries:
            return None
        first = target.encode("utf-8")[: boundaries[0]].decode("utf-8", "ignore")
        if not first:
            return None
        (doc,) = self.doc([context + first])
        start = len(context.encode("utf-8"))
        split = next((k for k, offset in enumerate(doc.offsets[:-1]) if offset >= start), None)
        if split is None or doc.offsets[split] != start:
            return None  # a token crosses the end of the context
        keep = max(self.max_context_tokens - len(self.doc.prefix), 0)
        context_ids = list(doc.lead) + doc.ids[:split]
        return NextToken(self.doc.prefix + context_ids[len(context_ids) - keep :], doc.ids[split:])

    def prompt_ids(self, prompt: str) -> list[int]:
        if prompt not in self._prompt_ids:
            if len(self._prompt_ids) > 4096:
                self._prompt_ids.clear()
            self._prompt_ids[prompt] = self.builder.encode(prompt)
        return self._prompt_ids[prompt]

    def gains(
        self,
        policy,
        baseline,
        prompts: Sequence[str],
        thoughts: Sequence[Sequence[int]],
        contexts: Sequence[str],
        targets: Sequence[str],
        boundaries: Sequence[Sequence[int]],
    ) -> list[tuple[float, float, float]]:
        """(gain, log p_policy with the thought, log p_baseline without) per thought; NaNs where
        the sample's next token cannot be placed. The baseline is scored once per context."""
        nexts = [self.next_token(c, t, b) for c, t, b in zip(contexts, targets, boundaries)]
        reasoned, baselines, where = [], {}, []
        for prompt, ids, nxt in zip(prompts, thoughts, nexts):
            if nxt is None:
                where.append(None)
                continue
            reasoned.append(
                (self.prompt_ids(prompt) + self.splitter.thought_ids(ids) + nxt.target_ids, len(nxt.target_ids))
            )
            key = (tuple(nxt.context_ids), tuple(nxt.target_ids))
            baselines.setdefault(key, len(baselines))
            where.append((len(reasoned) - 1, baselines[key]))
        with_thought = teacher_forced_logprobs(policy, reasoned, self.pad_id, self.batch_size)
        without = teacher_forced_logprobs(
            baseline, [(list(c) + list(t), len(t)) for c, t in baselines], self.pad_id, self.batch_size
        )
        nan = float("nan")
        return [
            (with_thought[i] - without[j], with_thought[i], without[j]) if spot else (nan, nan, nan)
            for spot in where
            for i, j in [spot or (0, 0)]
        ]


def teacher_forced_logprobs(model, rows: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int) -> list[float]:
    """Σ log p(token) over the last n tokens of each sequence, each given the tokens before it.

    Rows are left padded, so every row's scored tokens sit at the end and only the last positions'
    logits are computed (`logits_to_keep`); position ids follow the attention mask, so padding
    does not shift positions. Runs in eval mode without gradients, and restores the mode."""
    if not rows:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                width = max(len(rows[i][0]) for i in chunk)
                keep = max(rows[i][1] for i in chunk) + 1
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    seq = rows[i][0]
                    ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                    mask[r, width - len(seq) :] = 1
                positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=keep,
                    use_cache=False,
                ).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # position k predicts token k + 1
                for r, i in enumerate(chunk):
                    seq, n = rows[i]
                    wanted = torch.tensor(seq[len(seq) - n :], device=logprobs.device)
                    picked = logprobs[r, keep - 1 - n :].gather(1, wanted.unsqueeze(1))
                    out[i] = float(picked.sum())
    finally:
        model.train(was_training)
    return out


class EmaTeacher:
    """An exponential moving average of the policy's weights: φ ← τ·φ + (1 − τ)·θ after every
    optimizer step. It starts as a copy of the policy when the run starts, or from the weights a
    checkpoint saved (`TEACHER_FILE`) when the run resumes, so a resumed run scores as an
    uninterrupted one would."""

    def __init__(self, decay: float):
        self.decay = decay
        self.model = None

    def start(self, policy, saved: Path | None = None) -> None:
        self.model = copy.deepcopy(policy)
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        if saved is not None:
            self.model.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))

    @torch.no_grad()
    def update(self, policy) -> None:
        if self.model is None:
            return  # no step has scored yet: the teacher starts as the policy when first needed
        theirs = dict(policy.named_parameters())
        for name, mine in self.model.named_parameters():
            mine.lerp_(theirs[name].detach().to(mine.dtype), 1.0 - self.decay)

    def save(self, folder: Path) -> None:
        if self.model is not None:
            torch.save(self.model.state_dict(), folder / TEACHER_FILE)


class InformationGainReward:
    """The rlp reward as a TRL reward function: one information gain per completion, scored with
    the trainer's current policy and the EMA teacher. Bound to the trainer once it exists."""

    name = "information-gain"
    __name__ = "information_gain_reward"  # TRL names a reward function after it in its logs

    def __init__(self, gain: InformationGain, teacher: EmaTeacher, resume_from: Path | None = None):
        self.gain = gain
        self.teacher = teacher
        self.resume_from = resume_from
        self.trainer = None
        self.last: list[tuple[float, float, float]] = []

    def bind(self, trainer) -> None:
        self.trainer = trainer

    def __call__(self, prompts, completions, completion_ids, context, target, boundaries, **_) -> list[float]:
        if self.trainer is None:
            raise RuntimeError("InformationGainReward used before bind(trainer)")
        policy = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if self.teacher.model is None:
            saved = self.resume_from / TEACHER_FILE if self.resume_from is not None else None
            self.teacher.start(policy, saved if saved is not None and saved.is_file() else None)
        gains = self.gain.gains(policy, self.teacher.model, prompts, completion_ids, context, target, boundaries)
        # an empty thought is no thought: unscored (NaN), so it has advantage 0 and stays out of
        # its group's mean
        nan = (float("nan"),) * 3
        self.last = [nan if self.gain.splitter.is_empty(ids) else g for ids, g in zip(completion_ids, gains)]
        return [gain for gain, _, _ in self.last]


__all__ = [
    "TEACHER_FILE",
    "EmaTeacher",
    "InformationGain",
    "InformationGainReward",
    "NextToken",
    "ThoughtSplitter",
    "teacher_forced_logprobs",
]
