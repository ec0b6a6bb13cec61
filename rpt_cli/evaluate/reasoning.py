"""Next-token reasoning (`--mode reasoning`): k sampled completions per context, made and scored as
`rpt rollout` and `rpt reward` make and score them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from rpt_cli.evaluate.samples import EvalSample, Outcome
from rpt_cli.records import COMPLETION_BYTES
from rpt_cli.reward import Group, sample_of
from rpt_cli.reward.scoring import prediction_texts, record_predictions

# --------------------------------------------------------------------------------------------
# reasoning mode: the rollout layer's prompts and generation, the reward registry's scores
# --------------------------------------------------------------------------------------------


def evaluate_reasoning(
    samples: Sequence[EvalSample],
    backend,
    builder,
    reward_fn,
    *,
    k: int,
    sampling,
    chunk_contexts: int = 32,
    metadata: dict | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details of next-token reasoning: k completions per context from
    `rollout_chunks` (the prompts and seeds of `rpt rollout`), each scored by `reward_fn`.
    Accuracy counts the completions the reward function deems correct (for `prefix`, reward 1)."""
    from rpt_cli.rollout import RolloutStats, rollout_chunks

    stats = RolloutStats()
    chunks = rollout_chunks(
        rollout_inputs(samples),
        backend,
        builder,
        n=k,
        sampling=sampling,
        chunk_contexts=chunk_contexts,
        metadata=metadata,
        stats=stats,
    )

    def counted(_chunk) -> None:
        if on_chunk is not None:
            on_chunk(stats.contexts)

    return score_rollouts(chunks, reward_fn, on_chunk=counted)


def rollout_inputs(samples: Sequence[EvalSample]) -> Iterator[dict]:
    """The samples' records as rollout inputs: copies, since rollout adds fields."""
    return ({**sample.record} for sample in samples)


def score_rollouts(
    chunks: Iterable[list[dict]], reward_fn, *, on_chunk: Callable[[list[dict]], None] | None = None
) -> tuple[list[Outcome], list[dict]]:
    """Outcomes and per-sample details of chunks of rollout records (made here by
    `evaluate_reasoning`, or by Ray workers), in order."""
    from rpt_cli.generation.base import FINISH_LENGTH

    outcomes, details = [], []
    for chunk in chunks:
        groups = [
            Group(sample_of(record, need_context=reward_fn.needs_context), record_predictions(reward_fn, record))
            for record in chunk
        ]
        for record, group, scores in zip(chunk, groups, reward_fn.score_groups(groups)):
            count = len(scores.rewards)
            outcomes.append(
                Outcome(
                    accuracy=sum(scores.correct) / count,
                    solved=any(scores.correct),
                    reward=sum(scores.rewards) / count,
                    no_prediction=sum(p is None for p in group.predictions) / count,
                    truncated=sum(r == FINISH_LENGTH for r in record["finish_reasons"]) / count,
                    varied=len(set(scores.rewards)) > 1,
                )
            )
            details.append(
                {
                    "prompt": record["prompt"],
                    "completions": record["completions"],
                    "finish_reasons": record["finish_reasons"],
                    "completion_tokens": record["completion_tokens"],
                    **({COMPLETION_BYTES: record[COMPLETION_BYTES]} if COMPLETION_BYTES in record else {}),
                    "predictions": prediction_texts(group.predictions),
                    "rewards": scores.rewards,
                    "correct": list(scores.correct),
                    "accuracy": outcomes[-1].accuracy,
                    "solved": outcomes[-1].solved,
                }
            )
        if on_chunk is not None:
            on_chunk(chunk)
    return outcomes, details
