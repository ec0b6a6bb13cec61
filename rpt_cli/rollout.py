"""`rpt rollout`: G sampled chains of thought per context.

The core is `rollout_chunks`: samples in, rollout records out (records.md §4), a chunk of
contexts at a time and in input order. It knows nothing about files or options; the command in
cli.py wires it to JSONL input, a backend from `rpt_cli.generation`, and chunked output.

Seeds: chunk k of the input is sampled with `derive_seed(seed, k)`, whatever ran before it, so a
run is reproducible, and a run resumed after a crash samples every chunk it redoes exactly as
the first run did (unless the crash cut a chunk in half: its remaining contexts are then sampled
with the same seed but in a smaller batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from rpt_cli.generation.base import (
    FINISH_LENGTH,
    GenerationBackend,
    SamplingConfig,
    derive_seed,
)
from rpt_cli.prompts import PromptBuilder
from rpt_cli.records import COMPLETION_BYTES, completion_bytes_field

DEFAULT_ROLLOUTS = 8  # G in the paper
DEFAULT_CHUNK_CONTEXTS = 32  # contexts per backend call and per write


@dataclass
class RolloutStats:
    contexts: int = 0
    completions: int = 0
    truncated: int = 0  # completions cut off at max_new_tokens
    new_tokens: int = 0
    skipped_done: int = 0  # samples already in the output (--resume)
    generate_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.generate_seconds if self.generate_seconds else 0.0


def rollout_chunks(
    samples: Iterable[dict],
    backend: GenerationBackend,
    builder: PromptBuilder,
    *,
    n: int = DEFAULT_ROLLOUTS,
    sampling: SamplingConfig = SamplingConfig(),
    chunk_contexts: int = DEFAULT_CHUNK_CONTEXTS,
    metadata: dict | None = None,
    is_done: Callable[[dict], bool] | None = None,
    stats: RolloutStats | None = None,
    first_chunk: int = 0,
) -> Iterator[list[dict]]:
    """Yield lists of rollout records, one list per chunk of `chunk_contexts` input samples.

    Each record is its sample plus `prompt`, `prompt_tokens`, `completions`, `finish_reasons`,
    `completion_tokens` and `rollout` (`metadata`). Samples for which `is_done` says true are
    skipped (they still count in the chunk numbering, which fixes each chunk's seed). The chunks
    are numbered from `first_chunk`: a Ray worker handed chunk k of a run samples it as one
    process does.
    """
    if n < 1:
        raise ValueError("n (completions per context) must be at least 1")
    if chunk_contexts < 1:
        raise ValueError("chunk size must be at least 1")
    sampling.check()
    stats = stats if stats is not None else RolloutStats()
    metadata = dict(metadata or {})
    chunk: list[dict] = []
    index = first_chunk
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == chunk_contexts:
            yield from _run_chunk(chunk, index, backend, builder, n, sampling, metadata, is_done, stats)
            chunk, index = [], index + 1
    if chunk:
        yield from _run_chunk(chunk, index, backend, builder, n, sampling, metadata, is_done, stats)


def _run_chunk(chunk, index, backend, builder, n, sampling, metadata, is_done, stats) -> Iterator[list[dict]]:
    todo = [sample for sample in chunk if not (is_done and is_done(sample))]
    stats.skipped_done += len(chunk) - len(todo)
    if not todo:
        return
    built = [builder.build_with_ids(sample["context"]) for sample in todo]
    seed = None if sampling.seed is None else derive_seed(sampling.seed, "chunk", index)
    started = time.perf_counter()
    # the builder's token ids: special strings inside contexts stay plain text
    results = backend.generate([ids for _, ids in built], n, replace(sampling, seed=seed))
    stats.generate_seconds += time.perf_counter() - started
    records = []
    for sample, (prompt, prompt_ids), completions in zip(todo, built, results):
        stats.contexts += 1
        stats.completions += len(completions)
        stats.truncated += sum(c.finish_reason == FINISH_LENGTH for c in completions)
        stats.new_tokens += sum(c.tokens for c in completions)
        record = {
            **sample,
            "prompt": prompt,
            "prompt_tokens": len(prompt_ids),
            "completions": [c.text for c in completions],
            "finish_reasons": [c.finish_reason for c in completions],
            "completion_tokens": [c.tokens for c in completions],
            "rollout": metadata,
        }
        # what the texts cannot hold, so rpt reward scores the bytes the model wrote
        record.pop(COMPLETION_BYTES, None)  # an input's own, which would describe other completions
        exact = completion_bytes_field(completions)
        if exact is not None:
            record[COMPLETION_BYTES] = exact
        records.append(record)
    yield records


def sample_chunks(samples: Iterable[dict], chunk_contexts: int) -> Iterator[tuple[int, list[dict]]]:
    """(chunk number, samples) as `rollout_chunks` cuts them: the units a Ray worker takes."""
    chunk: list[dict] = []
    index = 0
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == chunk_contexts:
            yield index, chunk
            chunk, index = [], index + 1
    if chunk:
        yield index, chunk


@dataclass(frozen=True)
class RolloutChunkWorker:
    """The unit processor of a Ray worker (cluster.UnitWorker): opens the generation engine and
    session once, then samples chunks of `sample_chunks`, each with its own chunk number and so
    its own seed; each result is (records, the chunk's RolloutStats)."""

    backend: str
    model: str
    engine_options: dict
    prompt: object  # generation.session.PromptSettings
    n: int
    sampling: SamplingConfig
    metadata: dict | None = None  # the records' `rollout` field; default: the session's

    def __call__(self):
        from rpt_cli.generation import get_backend
        from rpt_cli.generation.session import GenerationSession

        engine = get_backend(self.backend, self.model, **self.engine_options)
        session = GenerationSession(engine, self.prompt)
        metadata = self.metadata if self.metadata is not None else session.metadata(self.sampling, self.n)

        def process(unit: tuple[int, list[dict]]):
            index, chunk = unit
            stats = RolloutStats()
            records = [
                record
                for records in rollout_chunks(
                    chunk,
                    engine,
                    session.builder,
                    n=self.n,
                    sampling=self.sampling,
                    chunk_contexts=len(chunk),
                    metadata=metadata,
                    stats=stats,
                    first_chunk=index,
                )
                for record in records
            ]
            return records, stats

        return process


def numbered_samples(
    numbered: Iterable[tuple[int, dict]],
    *,
    source: str,
    unique: bool = False,
    limit: int | None = None,
    with_lines: bool = False,
) -> Iterator:
    """Samples from (line number, record) pairs, each with an `id` (its line number when it has
    none), the first `limit` of them. With `unique`, a repeated id is an input error naming both
    lines (records.md: ids tell samples apart wherever a command keys on them). With
    `with_lines`, (line number, sample) pairs."""
    from rpt_cli.errors import InputError
    from rpt_cli.resume import id_key

    seen: dict[bytes, int] = {}
    for count, (lineno, sample) in enumerate(numbered):
        if limit is not None and count >= limit:
            return
        if sample.get("id") is None:
            sample["id"] = lineno
        if unique:
            key = id_key(sample["id"])
            if key in seen:
                raise InputError(source, lineno, duplicate_id_message(sample["id"], seen[key]))
            seen[key] = lineno
        yield (lineno, sample) if with_lines else sample


def duplicate_id_message(value, first_line: int) -> str:
    return (
        f"duplicate id {value!r} (first on line {first_line}): ids must tell samples apart (results, "
        f"logs and --resume are keyed on them); give each sample its own id"
    )
