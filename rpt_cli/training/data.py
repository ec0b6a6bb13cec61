"""The data side of `rpt train`: samples in (checked line by line), TRL dataset rows out, and the
order in which contexts are drawn.

The order is a pure function of the seed, the number of samples and the step: step s trains on
contexts s·C … s·C + C − 1 of an endless stream made of one seeded permutation of the samples per
pass. Nothing in it depends on what ran before, so a resumed run draws exactly what an
uninterrupted one would, and raising `--max-steps` later only extends the stream.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from rpt_cli.boundaries import Alignment, PolicyTokenizer, align
from rpt_cli.errors import InputError
from rpt_cli.generation.base import derive_seed
from rpt_cli.jsonl import ReadStats, read_records
from rpt_cli.records import training_sample
from rpt_cli.rollout import duplicate_id_message


@dataclass(frozen=True)
class Samples:
    rows: list[dict]  # id, context, target, boundaries
    sha256: str  # of the file's bytes: a resumed run must read the same file
    path: str
    lines: list[int] = field(default_factory=list)  # each row's line in the file
    made_with: list[dict | None] = field(default_factory=list)  # each row's `tokenizer` field
    stats: ReadStats = field(default_factory=ReadStats)  # what --skip-bad skipped

    def __len__(self) -> int:
        return len(self.rows)


def read_samples(path: str, *, skip_bad: bool = False) -> Samples:
    """Every sample of `path` (records.md §3), checked; errors name the file and line (with
    `skip_bad`, malformed samples are skipped and counted instead)."""
    rows, lines, made_with, stats = [], [], [], ReadStats()
    seen: dict[str, int] = {}  # batches.jsonl and the logs name samples by id
    for lineno, record in read_records(path, training_sample, skip_bad=skip_bad, stats=stats, with_lines=True):
        sample_id = str(record.get("id", lineno))
        if sample_id in seen:
            raise InputError(path, lineno, duplicate_id_message(record.get("id", lineno), seen[sample_id]))
        seen[sample_id] = lineno
        rows.append(
            {
                "id": sample_id,
                "context": record["context"],
                "target": record["target"],
                "boundaries": list(record["boundaries"]),
            }
        )
        lines.append(lineno)
        made_with.append(record.get("tokenizer"))
    if not rows:
        raise InputError(
            path,
            None,
            "no samples (the file is empty); make some with rpt filter"
            if not stats.skipped
            else f"no samples left: all {len(stats.skipped):,} were skipped as bad",
        )
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return Samples(rows, digest.hexdigest(), path, lines, made_with, stats)


def align_samples(samples: Samples, policy: PolicyTokenizer, *, skip_bad: bool = False) -> tuple[Samples, Alignment]:
    """The samples with boundaries in the policy's tokens (boundaries.py): as they are when they
    were made with its tokenizer (or say nothing), re-derived when made with another; one that
    cannot be re-derived stops the run (or, with `skip_bad`, is left out and counted)."""
    entries = [
        (line, {**row, "tokenizer": made}) for line, row, made in zip(samples.lines, samples.rows, samples.made_with)
    ]
    found, alignment = align(entries, policy, samples.path, stats=samples.stats if skip_bad else None)
    rows = [
        samples.rows[i] if boundaries is None else {**samples.rows[i], "boundaries": list(boundaries)}
        for i, boundaries in zip(alignment.kept, found)
    ]
    if not rows:
        raise InputError(
            samples.path, None, f"no samples left: none can be re-derived with the policy's tokenizer {policy.identity}"
        )
    return replace(
        samples,
        rows=rows,
        lines=[samples.lines[i] for i in alignment.kept],
        made_with=[samples.made_with[i] for i in alignment.kept],
    ), alignment


EMPTY_PROMPT = (
    "the prompt is empty (an empty context in a template that adds nothing, and a tokenizer that adds no "
    "begin-of-sequence token): the policy has nothing to continue; give the sample a context"
)


def prompt_rows(samples: Samples, builder, *, skip_bad: bool = False) -> tuple[Samples, list[dict]]:
    """TRL dataset rows: the prompt exactly as `rpt rollout` builds it (same template, chat wrapping
    and left truncation), plus the columns the reward reads. A prompt of no tokens (an empty
    context with `--answer direct`) cannot be generated from: it stops the run here, before the
    run folder is written (with `skip_bad`, it is left out and counted)."""
    kept, rows = [], []
    for index, row in enumerate(samples.rows):
        prompt, length = builder.build_with_length(row["context"])
        if length == 0:
            if not skip_bad:
                raise InputError(samples.path, samples.lines[index], EMPTY_PROMPT)
            samples.stats.skipped.append((samples.path, samples.lines[index], EMPTY_PROMPT))
            continue
        kept.append(index)
        rows.append({"prompt": prompt, **row})
    if not rows:
        raise InputError(samples.path, None, f"no samples left: {EMPTY_PROMPT}")
    if len(kept) < len(samples.rows):
        samples = replace(
            samples,
            rows=[samples.rows[i] for i in kept],
            lines=[samples.lines[i] for i in kept],
            made_with=[samples.made_with[i] for i in kept],
        )
    return samples, rows


def build_rows(samples: Samples, builder) -> list[dict]:
    """`prompt_rows` without skipping: the rows of every sample."""
    return prompt_rows(samples, builder)[1]


class DataOrder:
    """Which samples each step draws: an endless stream of seeded permutations, C per step."""

    def __init__(self, num_samples: int, contexts_per_step: int, seed: int):
        self.num_samples = num_samples
        self.contexts_per_step = contexts_per_step
        self.seed = seed

    @lru_cache(maxsize=4)  # noqa: B019 - one DataOrder lives as long as its run; the cache is bounded
    def _permutation(self, epoch: int) -> tuple[int, ...]:
        order = list(range(self.num_samples))
        random.Random(derive_seed(self.seed, "data-order", epoch)).shuffle(order)
        return tuple(order)

    def step_indices(self, step: int) -> list[int]:
        """The C sample indices of (0-based) step `step`."""
        start = step * self.contexts_per_step
        out = []
        for position in range(start, start + self.contexts_per_step):
            epoch, offset = divmod(position, self.num_samples)
            out.append(self._permutation(epoch)[offset])
        return out

    @lru_cache(maxsize=2)  # noqa: B019 - as above
    def refill_stream(self, step: int) -> tuple[int, ...]:
        """The contexts dynamic sampling may draw in (0-based) step `step`, in the order it draws
        them: never one of the step's own contexts; first those the current pass has not reached
        yet, then the others; each group shuffled by a seed fixed by the step, so a resumed run
        redraws the same ones."""
        drawn = set(self.step_indices(step))
        epoch, offset = divmod((step + 1) * self.contexts_per_step - 1, self.num_samples)
        unseen = [i for i in self._permutation(epoch)[offset + 1 :] if i not in drawn]
        later = set(unseen)
        seen = [i for i in range(self.num_samples) if i not in drawn and i not in later]
        rng = random.Random(derive_seed(self.seed, "refill", step))
        rng.shuffle(unseen)
        rng.shuffle(seen)
        return tuple(unseen + seen)

    def refill_indices(self, step: int, start: int, count: int) -> list[int]:
        """Positions `start` … `start + count - 1` of step `step`'s refill stream. Processes and
        refill rounds take consecutive slices, so no context comes twice in a step until every
        other sample has been drawn (then the stream starts over, and repeats are unavoidable)."""
        stream = self.refill_stream(step) or tuple(range(self.num_samples))  # every sample is in the step
        return [stream[(start + k) % len(stream)] for k in range(count)]

    def epochs(self, steps: int) -> float:
        """Passes over the samples after `steps` steps."""
        return steps * self.contexts_per_step / self.num_samples


class StepSampler:
    """The index stream TRL's dataloader reads, laid out as TRL's own `RepeatSampler` lays it out
    (each context G times in a row; each step's contexts repeated once per accumulation step,
    since TRL generates from the first of those batches and reuses the result), but in the order
    of `DataOrder`, for exactly `steps` steps. Sharding over processes happens downstream in
    accelerate: process p gets the p-th slice of every step."""

    def __init__(self, order: DataOrder, num_generations: int, repeat_count: int, steps: int):
        self.order = order
        self.num_generations = num_generations
        self.repeat_count = repeat_count
        self.steps = steps

    def __iter__(self) -> Iterator[int]:
        for step in range(self.steps):
            indices = self.order.step_indices(step)
            for _ in range(self.repeat_count):
                for index in indices:
                    for _ in range(self.num_generations):
                        yield index

    def __len__(self) -> int:
        return self.steps * self.repeat_count * self.order.contexts_per_step * self.num_generations


__all__ = ["DataOrder", "Samples", "StepSampler", "align_samples", "build_rows", "prompt_rows", "read_samples"]
