"""`rpt eval --ray`: the model work of both modes on a Ray cluster's workers (cluster.py), the rest here.

- ntp: this process plans the forward-pass rows and batches with the tokenizer alone
  (`NextTokenPlanner`, the single process's own planning), the workers run the batches, a few
  to a unit, and return each row's argmax tokens; the predictions are assembled here, in order.
  Same batches, so the same tokens as one process.
- reasoning: the samples go out in the single process's chunks of `--contexts-per-call`, each
  sampled by a worker with its chunk's seed (`RolloutChunkWorker`, as `rpt rollout --ray`); the
  completions are scored here with the reward function, in order.

The dense rewards need the model in this process (they score with it): they are refused with
`--ray`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rpt_cli.evaluate.ntp import NextTokenPlanner, NextTokenPredictor, Row

# forward-pass batches per unit of work: enough to keep a worker busy between round trips, few
# enough that a long evaluation spreads over all workers
BATCHES_PER_UNIT = 4


@dataclass(frozen=True)
class NtpBatchWorker:
    """The unit processor of a Ray worker (cluster.UnitWorker): loads the model once, then returns
    the argmax tokens of each batch of a unit (a list of batches of rows)."""

    source: str
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    batch_tokens: int = 8192
    max_context_tokens: int | None = None

    def __call__(self):
        from rpt_cli.models import load_model

        model, tokenizer, device = load_model(
            self.source, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code
        )
        predictor = NextTokenPredictor(
            model, tokenizer, device, batch_tokens=self.batch_tokens, max_context_tokens=self.max_context_tokens
        )

        def process(batches: list[list[Row]]) -> list[list[list[int]]]:
            return [predictor.argmax(batch) for batch in batches]

        return process


class RayNextTokenPredictor(NextTokenPlanner):
    """`NextTokenPredictor.predict` with the forward passes on a Ray cluster."""

    def __init__(self, cluster, worker: NtpBatchWorker, tokenizer, max_positions: int | None, *, share_passes: bool):
        from rpt_cli.forward import ForwardEngine

        super().__init__(
            ForwardEngine(None, tokenizer, max_positions=max_positions),
            batch_tokens=worker.batch_tokens,
            max_context_tokens=worker.max_context_tokens,
            share_passes=share_passes,
        )
        self.cluster, self.worker = cluster, worker

    def _run(self, batches: list[list[Row]]) -> Iterator[list[list[int]]]:
        units = [batches[i : i + BATCHES_PER_UNIT] for i in range(0, len(batches), BATCHES_PER_UNIT)]
        for results in self.cluster.results(units, self.worker):
            yield from results

    def predict(self, contexts, doc_ids=None, *, on_batch=None):
        return self.predict_with(self._run, contexts, doc_ids, on_batch=on_batch)


def reasoning_chunks_on_ray(cluster, samples, worker, chunk_contexts: int, on_stats=None) -> Iterator[list[dict]]:
    """The rollout records of the samples, chunk by chunk in input order, sampled by the cluster's
    workers (`worker`: a RolloutChunkWorker); `on_stats` sees each chunk's RolloutStats."""
    from rpt_cli.evaluate.reasoning import rollout_inputs
    from rpt_cli.rollout import sample_chunks

    for records, stats in cluster.results(sample_chunks(rollout_inputs(samples), chunk_contexts), worker):
        if on_stats is not None:
            on_stats(stats)
        yield records


__all__ = ["NtpBatchWorker", "RayNextTokenPredictor", "reasoning_chunks_on_ray"]
