"""What one GRPO step drew, generated, trained on and spent its time on, summed over processes
into one metrics line (`summarize`), and the step's compute estimate (`step_flops`)."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

# Where a step's time goes (seconds, this process): generation (sampling the completions and
# preparing the batch: tokens, advantages), reward (the reward functions, RLP's scoring passes
# included), scoring (forward passes without gradients: old and reference log-probabilities),
# train (the policy's forward and backward passes) and optimizer (gradient clipping and the
# optimizer's update).
TIME_PARTS = ("generation", "reward", "scoring", "train", "optimizer")


class StepTimes:
    """Seconds per part of the current step; nested parts are not counted twice (the outer part
    is charged its time less the inner parts' time)."""

    def __init__(self):
        self.seconds = dict.fromkeys(TIME_PARTS, 0.0)
        self._open: list[list[float]] = []  # [start, seconds of inner parts]

    def reset(self) -> None:
        self.seconds = dict.fromkeys(TIME_PARTS, 0.0)

    @contextmanager
    def part(self, name: str):
        self._open.append([time.perf_counter(), 0.0])
        try:
            yield
        finally:
            start, inner = self._open.pop()
            spent = time.perf_counter() - start
            self.seconds[name] += spent - inner
            if self._open:
                self._open[-1][1] += spent

    def as_metrics(self) -> dict:
        return {f"{name}_s": value for name, value in self.seconds.items()}


class OptimizerClock(TrainerCallback):
    """Charges gradient clipping and the optimizer's update to the step's optimizer time."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.trainer._rpt_optimizer_started is None:  # no clipping (--max-grad-norm 0)
            self.trainer._rpt_optimizer_started = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        started, self.trainer._rpt_optimizer_started = self.trainer._rpt_optimizer_started, None
        if started is not None:
            self.trainer.rpt_times.seconds["optimizer"] += time.perf_counter() - started


@dataclass
class Round:
    """One call of TRL's generate-and-score on this process: G completions for each of its groups."""

    ids: list[str]  # one per group
    rewards: torch.Tensor  # one per completion (weighted sum over reward functions; NaN: unscored)
    no_prediction: list[bool]  # one per completion
    lengths: list[int]  # completion tokens, one per completion
    truncated: list[bool]  # cut at max_completion_length, one per completion
    zero_variance: list[bool] = field(default_factory=list)  # one per group


@dataclass
class StepRecord:
    """What one optimizer step drew, generated, dropped and trained on (this process's share)."""

    step: int
    started: float
    drawn: list[str] = field(default_factory=list)
    refilled: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)  # of the completions trained on
    no_prediction: int = 0
    lengths: int = 0
    truncated: int = 0
    completions: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens of every sequence generated (prefilled), all rounds
    trained_tokens: int = 0
    groups: int = 0
    zero_before: int = 0
    zero_after: int = 0
    rounds: int = 0

    def train_on(self, round_: Round, groups: list[int], G: int) -> None:
        for g in groups:
            rows = range(g * G, (g + 1) * G)
            self.rewards += [float(round_.rewards[i]) for i in rows]
            self.no_prediction += sum(round_.no_prediction[i] for i in rows)
            self.lengths += sum(round_.lengths[i] for i in rows)
            self.truncated += sum(round_.truncated[i] for i in rows)
            self.completions += G
            self.zero_after += round_.zero_variance[g]


def step_flops(parameters: int, step: dict) -> float:
    """Training compute of one step (the estimate `rpt scaling` fits against), with N parameters:

        2N x (prompt + generated tokens)              generation: prefill and decoding
      + 2N x (prompt + generated tokens) x extra      forward passes without gradients (old and
                                                      reference log-probabilities), when TRL runs them
      + 6N x trained tokens                           forward and backward of the update

    Every sequence generated counts, those of refill rounds that dynamic sampling drops included;
    trained tokens are the prompt and completion tokens of the batch the update used. The estimate
    counts every sequence's prompt, whether or not its passes share it (it measures the work of
    the method, not of this implementation)."""
    sequence_tokens = step["prompt_tokens"] + step["generated_tokens"]
    return (
        2.0 * parameters * sequence_tokens * (1 + step["extra_forward_passes"])
        + 6.0 * parameters * step["trained_tokens"]
    )


def summarize(record: StepRecord, accelerator, extra_passes: int) -> dict:
    """Sum the step's record over processes (every process calls this)."""
    rewards = torch.tensor(record.rewards, dtype=torch.float64)
    scored = rewards[~torch.isnan(rewards)]
    counts = [
        record.completions,
        scored.numel(),
        float(scored.sum()),
        float((scored**2).sum()),
        record.no_prediction,
        record.lengths,
        record.truncated,
        record.generated_tokens,
        record.prompt_tokens,
        record.trained_tokens,
        record.groups,
        record.zero_before,
        record.zero_after,
        len(record.drawn),
    ]
    sums = torch.tensor([counts], dtype=torch.float64, device=accelerator.device)
    (
        completions,
        n_scored,
        total,
        squares,
        no_pred,
        lengths,
        truncated,
        generated,
        prompts,
        trained,
        groups,
        zero_before,
        zero_after,
        drawn_groups,
    ) = accelerator.gather(sums).sum(dim=0).tolist()
    from accelerate.utils import gather_object

    ids = gather_object([(record.drawn, record.refilled, record.dropped)])
    mean = total / n_scored if n_scored else float("nan")
    variance = max(squares / n_scored - mean * mean, 0.0) if n_scored else float("nan")
    return {
        "step": record.step,
        "reward_mean": mean,
        "reward_std": math.sqrt(variance) if n_scored else float("nan"),
        "zero_variance_share_before": zero_before / drawn_groups,
        "zero_variance_share_after": zero_after / drawn_groups,
        "no_prediction_share": no_pred / completions,
        "completion_length_mean": lengths / completions,
        "truncated_share": truncated / completions,
        "generated_tokens": int(generated),
        "prompt_tokens": int(prompts),
        "trained_tokens": int(trained),
        "extra_forward_passes": extra_passes,
        "groups_generated": int(groups),
        "sampling_rounds": record.rounds,
        "_started": record.started,
        "_ids": {
            "drawn": [i for part in ids for i in part[0]],
            "refilled": [i for part in ids for i in part[1]],
            "dropped": [i for part in ids for i in part[2]],
        },
    }


__all__ = ["TIME_PARTS", "OptimizerClock", "Round", "StepRecord", "StepTimes", "step_flops", "summarize"]
