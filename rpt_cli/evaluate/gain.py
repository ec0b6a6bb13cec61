"""Information gain (`--mode gain`): k thoughts per context, sampled with the `thought` template as
`rpt train --objective rlp` samples them, each scored by RLP's information gain with the model
itself on both sides (training scores the baseline with an EMA teacher; a model evaluated alone
is its own teacher):

    gain(z) = log p(x_t | x_<t, <think> z </think>) − log p(x_t | x_<t)

in nats per next token. A positive gain means the thought made the true next token more likely.
The accuracy of a sample is the share of its thoughts with a positive gain."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rpt_cli.evaluate.samples import EvalSample, Outcome


def evaluate_gain(
    samples: Sequence[EvalSample],
    backend,
    builder,
    gain,
    model,
    *,
    k: int,
    sampling,
    chunk_contexts: int = 32,
    metadata: dict | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details: k thoughts per context from `rollout_chunks` (the prompts
    and seeds of `rpt rollout`), each scored by `gain` (`training.rlp.InformationGain`) with
    `model` as policy and baseline. The thoughts are scored as text: their tokens are the
    tokenizer's own encoding of each completion, as a trainer would read them back."""
    from rpt_cli.generation.base import FINISH_LENGTH
    from rpt_cli.prompts import plain_token_ids
    from rpt_cli.rollout import RolloutStats, rollout_chunks

    stats = RolloutStats()
    outcomes, details = [], []
    in_order = iter(samples)  # rollout_chunks yields its records in input order
    records = ({**sample.record} for sample in samples)  # rollout adds fields: leave the inputs alone
    for chunk in rollout_chunks(
        records, backend, builder, n=k, sampling=sampling, chunk_contexts=chunk_contexts, metadata=metadata, stats=stats
    ):
        prompts, thoughts, contexts, targets, boundaries = [], [], [], [], []
        for record in chunk:
            sample = next(in_order)
            for completion in record["completions"]:
                prompts.append(record["prompt"])
                thoughts.append(plain_token_ids(gain.tokenizer, completion))
                contexts.append(sample.context)
                targets.append(sample.truth.target)
                boundaries.append(sample.truth.boundaries)
        scored = iter(gain.gains(model, model, prompts, thoughts, contexts, targets, boundaries))
        for record in chunk:
            count = len(record["completions"])
            rows = [next(scored) for _ in range(count)]
            gains = [row[0] for row in rows]
            placed = [g for g in gains if not math.isnan(g)]
            outcomes.append(
                Outcome(
                    accuracy=sum(g > 0 for g in placed) / count,
                    solved=any(g > 0 for g in placed),
                    truncated=sum(r == FINISH_LENGTH for r in record["finish_reasons"]) / count,
                    gain=sum(placed) / len(placed) if placed else None,
                )
            )
            details.append(
                {
                    "prompt": record["prompt"],
                    "completions": record["completions"],
                    "finish_reasons": record["finish_reasons"],
                    "completion_tokens": record["completion_tokens"],
                    # None where the next token could not be placed in the model's tokens
                    "gains": [None if math.isnan(g) else g for g in gains],
                    "logprob_with_thought": [None if math.isnan(r[1]) else r[1] for r in rows],
                    "logprob_without": None if not placed else rows[0][2],
                    "accuracy": outcomes[-1].accuracy,
                    "info_gain": outcomes[-1].gain,
                }
            )
        if on_chunk is not None:
            on_chunk(stats.contexts)
    return outcomes, details
