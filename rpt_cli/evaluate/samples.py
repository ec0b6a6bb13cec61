"""Evaluation samples: reading and selecting them, their splits, and the statistics of a split
(accuracy, Wilson interval; mean information gain and its normal interval in gain mode)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from rpt_cli.evaluate.runs import ModelRef
from rpt_cli.filter import SPLIT_NAMES, in_split, split_label
from rpt_cli.jsonl import ReadStats
from rpt_cli.reward import Sample, make_sample, sample_of

NTP, REASONING, GAIN = "ntp", "reasoning", "gain"
MODES = (NTP, REASONING, GAIN)
SPLIT_CHOICES = (*SPLIT_NAMES, "all")
# 97.5th percentile of the standard normal: the z of a two-sided 95 % interval
Z95 = 1.959963984540054
INTERVAL = "wilson"
# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EvalSample:
    """One sample to evaluate: the record as read, its checked ground truth, and its split label."""

    record: dict
    truth: Sample
    label: str  # easy, medium, hard or none: the hardest split it belongs to
    line: int | None = None  # in the samples file, for errors

    @property
    def context(self) -> str:
        return self.record["context"]

    @property
    def doc_id(self):
        return self.record.get("doc_id")


def sample_label(record: dict) -> str:
    """Split label from the entropy with the paper's thresholds (as `rpt filter` labels), so a
    hand-edited or stale `split` field cannot disagree with the numbers; the label only when
    there is no entropy."""
    entropy = record.get("entropy")
    return split_label(entropy) if entropy is not None else record["split"]


def select_samples(
    records: Iterable[dict | tuple[int, dict]], split: str = "all", limit: int | None = None
) -> list[EvalSample]:
    """The samples of `split` (nested: `medium` holds the hard ones too), the first `limit` of
    them, from records or (line, record) pairs."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"--split {split}: choose one of {', '.join(SPLIT_CHOICES)}")
    selected: list[EvalSample] = []
    for item in records:
        if limit is not None and len(selected) >= limit:
            break
        line, record = item if isinstance(item, tuple) else (None, item)
        label = sample_label(record)
        if in_split(label, split):
            selected.append(EvalSample(record, sample_of(record, need_context=True), label, line))
    return selected


def in_policy_tokens(
    samples: Sequence[EvalSample], tokenizer, ref: ModelRef, source: str, *, skipped: ReadStats | None = None
):
    """The samples with boundaries in the tokens of the model evaluated (boundaries.py): re-derived
    where they were made with another tokenizer. Returns (samples, Alignment); a sample that
    cannot be re-derived is an InputError, or with `skipped` (--skip-bad) left out and counted."""
    from rpt_cli.boundaries import PolicyTokenizer, align

    found, alignment = align(
        [(s.line, s.record) for s in samples], PolicyTokenizer(tokenizer, ref.name, ref.spec), source, stats=skipped
    )
    out = []
    for index, boundaries in zip(alignment.kept, found):
        sample = samples[index]
        if boundaries is not None:
            sample = replace(
                sample,
                truth=make_sample(
                    sample.record["target"], list(boundaries), sample.record["context"], need_context=True
                ),
            )
        out.append(sample)
    return out, alignment


def report_splits(split: str) -> tuple[str, ...]:
    """The splits a report lists: all three, or the chosen one and those nested inside it."""
    return SPLIT_NAMES if split == "all" else SPLIT_NAMES[SPLIT_NAMES.index(split) :]


# --------------------------------------------------------------------------------------------
# Accuracy and intervals
# --------------------------------------------------------------------------------------------


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `accuracy` observed over `n` trials.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 % or 100 %, which
    small, hard splits hit often. With k completions per context the proportion is the mean of the
    contexts' per-context accuracies over n contexts; a mean of values in [0, 1] varies no more
    than a proportion of n independent trials, so the interval is then conservative.
    """
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (accuracy + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n + z2 / (4 * n * n)) / denominator
    # at 0 % (100 %) the bound is exactly 0 (1): say so rather than leave rounding residue
    low = 0.0 if accuracy <= 0 else max(0.0, centre - half)
    high = 1.0 if accuracy >= 1 else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Outcome:
    """How one model did on one sample. ntp: accuracy 0 or 1. reasoning: the share of the k
    completions that are correct (by the reward function's rule), `solved` when any is. gain: the
    share of the k thoughts whose information gain is positive, `gain` their mean (None when the
    sample's next token could not be placed in the model's tokens)."""

    accuracy: float
    solved: bool
    reward: float = 0.0
    no_prediction: float = 0.0
    truncated: float = 0.0
    gain: float | None = None
    varied: bool = False  # reasoning: the k rewards differ (a GRPO group with signal)


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    """The normal-approximation 95 % interval of a mean (sample standard deviation); None below
    two values, where no spread can be estimated."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * spread / math.sqrt(n)
    return mean - half, mean + half


def summarize(outcomes: Sequence[Outcome], *, mode: str = NTP) -> dict:
    """One split's entry of the report: n, accuracy, ci95, plus pass@k figures in reasoning mode
    and the mean information gain (nats per next token) in gain mode."""
    n = len(outcomes)
    entry: dict = {"n": n, "accuracy": None, "ci95": None}
    if n:
        accuracy = sum(o.accuracy for o in outcomes) / n
        entry.update(accuracy=accuracy, ci95=list(wilson_interval(accuracy, n)))
    if mode == REASONING:
        solved = sum(o.solved for o in outcomes) / n if n else None
        entry.update(
            pass_at_k=solved,
            pass_at_k_ci95=list(wilson_interval(solved, n)) if n else None,
            mean_reward=sum(o.reward for o in outcomes) / n if n else None,
            no_prediction_share=sum(o.no_prediction for o in outcomes) / n if n else None,
            # the share of samples whose k rewards differ: where GRPO at this temperature and
            # G = k would have a learning signal
            varied_share=sum(o.varied for o in outcomes) / n if n else None,
        )
    elif mode == GAIN:
        gains = [o.gain for o in outcomes if o.gain is not None]
        interval = mean_interval(gains)
        entry.update(
            info_gain=sum(gains) / len(gains) if gains else None,
            info_gain_ci95=list(interval) if interval else None,
            info_gain_n=len(gains),
        )
    return entry


def split_report(samples: Sequence[EvalSample], outcomes: Sequence[Outcome], split: str, *, mode: str = NTP) -> dict:
    """The `n`, overall figures and per-split entries of a report (records.md §6)."""
    report = {"n": len(samples), **{k: v for k, v in summarize(outcomes, mode=mode).items() if k != "n"}}
    report["splits"] = {
        name: summarize([o for s, o in zip(samples, outcomes) if in_split(s.label, name)], mode=mode)
        for name in report_splits(split)
    }
    return report
