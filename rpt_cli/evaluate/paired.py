"""Paired comparisons: several models evaluated on the same samples, each against the first.

Two accuracies with overlapping Wilson intervals can still differ for real: both models saw the
same samples, so most of the sample-to-sample spread is shared and cancels in the per-sample
difference. Here every later model's report gets the mean of its per-sample differences from the
first model evaluated in the same mode (`paired`, records.md §6), over the samples both scored
(paired by id), with

- a 95 % **paired bootstrap** interval: the samples' differences are resampled with replacement
  (seeded, so a rerun gives the same numbers) and the 2.5th and 97.5th percentiles of the
  resampled means taken;
- an exact two-sided **sign test** p-value on the samples whose scores differ (for 0/1 scores, as
  in ntp, this is McNemar's exact test).

A sample's score is what the report averages: its accuracy (0 or 1 in ntp; the share of its k
correct completions in reasoning mode) or, in gain mode, its mean information gain (samples whose
next token could not be placed in a model's tokens have none and are not paired).
"""

from __future__ import annotations

from collections.abc import Sequence

from rpt_cli.evaluate.samples import GAIN, EvalSample, Outcome
from rpt_cli.evaluate.tables import mode_label
from rpt_cli.filter import in_split
from rpt_cli.resume import id_key

METHOD = "bootstrap"
RESAMPLES = 10_000
# resampled indices drawn at once, at most (memory: 8 bytes each)
_BLOCK = 1 << 20

# (split label, score) per sample, keyed by the sample's id (type-exact: 1 and "1" differ)
Scores = dict[bytes, tuple[str, float]]


def sample_scores(samples: Sequence[EvalSample], outcomes: Sequence[Outcome], mode: str) -> Scores:
    """Each scored sample's split label and score, keyed by its id (`rpt eval` gives every sample
    one; a sample without falls back to its place in the input)."""
    scores: Scores = {}
    for index, (sample, outcome) in enumerate(zip(samples, outcomes)):
        score = outcome.gain if mode == GAIN else outcome.accuracy
        if score is None:
            continue
        ident = sample.record.get("id")
        scores[id_key(ident if ident is not None else ["#", index])] = (sample.label, float(score))
    return scores


def bootstrap_interval(differences: Sequence[float], *, seed: int, resamples: int = RESAMPLES) -> tuple[float, float]:
    """The 95 % percentile interval of the mean of `differences`, from `resamples` resamples with
    replacement drawn by a generator seeded with `seed`."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("an interval needs at least one difference")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    rows = max(1, _BLOCK // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    # a resampled mean lies between the smallest and largest difference: clip rounding residue
    return float(max(low, values.min())), float(min(high, values.max()))


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test of a zero median difference: ties (zero differences) left out,
    2 · P(X ≤ min(positives, negatives)) with X ~ Binomial(m, 1/2) over the m non-zero ones."""
    positive = sum(d > 0 for d in differences)
    negative = sum(d < 0 for d in differences)
    m = positive + negative
    if m == 0:
        return 1.0
    # exact integers: C(m, i+1) = C(m, i) · (m − i) / (i + 1)
    term = tail = 1
    for i in range(min(positive, negative)):
        term = term * (m - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**m)


def paired_difference(baseline: Sequence[float], other: Sequence[float], *, seed: int) -> dict:
    """n, the mean difference (other − baseline), its 95 % paired bootstrap interval (null below two
    pairs: no spread to resample) and the sign test's p-value (null without pairs)."""
    if len(baseline) != len(other):
        raise ValueError("paired scores must come in pairs")
    differences = [b - a for a, b in zip(baseline, other)]
    n = len(differences)
    if n == 0:
        return {"n": 0, "difference": None, "ci95": None, "p_value": None}
    return {
        "n": n,
        "difference": sum(differences) / n,
        "ci95": list(bootstrap_interval(differences, seed=seed)) if n >= 2 else None,
        "p_value": sign_test(differences),
    }


def _compare(baseline: Scores, other: Scores, split: str | None, seed: int) -> dict:
    """The paired difference over the samples both scored, all of them (split None) or those in
    one of the nested splits."""
    keys = [k for k in other if k in baseline and (split is None or in_split(other[k][0], split))]
    return paired_difference([baseline[k][1] for k in keys], [other[k][1] for k in keys], seed=seed)


def add_paired(scored: Sequence[tuple[dict, Scores]], *, seed: int) -> None:
    """Fill in `paired` (overall and per split) of every report that has a baseline: the first
    report of the same mode and answer format (`mode_label`), that is the first model evaluated
    that way. Reports come as (report, its sample scores) in the order they were made."""
    baselines: dict[str, tuple[dict, Scores]] = {}
    for report, scores in scored:
        label = mode_label(report)
        if label not in baselines:
            baselines[label] = (report, scores)
            continue
        base_report, base_scores = baselines[label]
        report["paired"] = {
            "baseline": base_report["model"],
            "method": METHOD,
            "resamples": RESAMPLES,
            "seed": seed,
            **_compare(base_scores, scores, None, seed),
        }
        for name, entry in report["splits"].items():
            entry["paired"] = _compare(base_scores, scores, name, seed)
