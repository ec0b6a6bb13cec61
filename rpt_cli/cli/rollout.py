"""`rpt rollout`: G sampled completions per context. The command only: the work is in the core modules."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from rpt_cli import paper
from rpt_cli.cli.app import (
    ANSWER_HELP,
    BackendOpt,
    CompletionsOpt,
    DeviceOpt,
    DtypeOpt,
    EnforceEagerOpt,
    GpuMemoryOpt,
    InputArg,
    MaxBatchSequencesOpt,
    MaxModelLenOpt,
    ModelOpt,
    NoMemoryCheckOpt,
    OutputOpt,
    RayGpusOpt,
    RayOpt,
    RayWorkersOpt,
    SkipBadOpt,
    TensorParallelOpt,
    TopKOpt,
    TopPOpt,
    TrustOpt,
    app,
    check_input,
    check_memory,
    check_numbers,
    check_outputs,
    old_name_option,
    renamed,
)
from rpt_cli.console import cli_errors, spinner, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, ReadStats, read_records
from rpt_cli.models import BUILTIN_NAME
from rpt_cli.records import sample_context

ROLLOUT_EXAMPLE = (
    "rpt rollout samples.jsonl -G 8 --max-new-tokens 1024 -o rollouts.jsonl --resume\n\n"
    "  rpt filter scored.jsonl --min 1.0 | rpt rollout -G 4 --max-new-tokens 256 | rpt reward > scored.jsonl"
)


@app.command(epilog=f"Examples:  {ROLLOUT_EXAMPLE}")
def rollout(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: ModelOpt = BUILTIN_NAME,
    num_completions: CompletionsOpt = paper.COMPLETIONS,
    num_rollouts_old: Annotated[int | None, old_name_option("-G/--num-completions", "--num-rollouts", "-n")] = None,
    temperature: Annotated[
        float, typer.Option(help=f"Sampling temperature (paper: {paper.TEMPERATURE}; 0 is greedy).")
    ] = paper.TEMPERATURE,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    answer: Annotated[
        str, typer.Option("--answer", metavar="boxed|direct", help=ANSWER_HELP + " Recorded in rollout.answer.")
    ] = "boxed",
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            help="Longest completion in tokens (default: 8192 as in the paper; 1 with --answer direct); longer ones end "
            "with finish reason 'length'.",
            show_default=False,
        ),
    ] = None,
    max_prompt_tokens: Annotated[
        int,
        typer.Option(
            help=f"Longest prompt in tokens (paper: {paper.PROMPT_TOKENS}); longer contexts are cut from the left at a token boundary."
        ),
    ] = paper.PROMPT_TOKENS,
    template: Annotated[
        str | None,
        typer.Option(
            help="Prompt template: v0 (the paper's, the default) to v6 (the paper's Table 10), fenced, candidates, "
            "fewshot, direct (the default with --answer direct), or a text file with a {context} or {prompt_content} "
            "placeholder.",
            show_default=False,
        ),
    ] = None,
    list_templates: Annotated[
        bool, typer.Option("--list-templates", help="Print the built-in templates in full and exit.")
    ] = False,
    chat: Annotated[
        bool | None,
        typer.Option(
            "--chat/--no-chat",
            help="Wrap the prompt in the model's chat template, when it has one (default: chat; "
            "no chat with --answer direct).",
            show_default=False,
        ),
    ] = None,
    think_prefix: Annotated[
        str | None,
        typer.Option(
            help="Text that opens the model's answer, e.g. '<think>' plus a newline for thinking models (none by default)."
        ),
    ] = None,
    backend: BackendOpt = "auto",
    contexts_per_call: Annotated[
        int, typer.Option(help="Contexts per generation call (a chunk): sampled together, then written and flushed.")
    ] = 32,
    batch_size_old: Annotated[int | None, old_name_option("--contexts-per-call", "--batch-size")] = None,
    max_batch_sequences: MaxBatchSequencesOpt = None,
    tensor_parallel_size: TensorParallelOpt = 1,
    gpu_memory_utilization: GpuMemoryOpt = 0.9,
    max_model_len: MaxModelLenOpt = None,
    enforce_eager: EnforceEagerOpt = False,
    no_memory_check: NoMemoryCheckOpt = False,
    seed: Annotated[
        int, typer.Option(help="Seed of the sampling (recorded in rollout.seed): same seed, same completions.")
    ] = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With -o: keep the records already in FILE, skip their ids, append the rest chunk by chunk.",
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Use only the first N samples (smoke runs).", metavar="N")] = None,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 2,
    ray_gpus_per_worker: RayGpusOpt = 0.0,
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Sample G chains of thought per context: the rollouts of next-token reasoning.

    Adds [bold]prompt[/], [bold]prompt_tokens[/], [bold]completions[/], [bold]finish_reasons[/]
    (stop or length), [bold]completion_tokens[/] and [bold]rollout[/] (model, template, sampling
    settings, seed, backend) to each sample, in input order.
    """
    with cli_errors():
        check_numbers(locals())
        num_rollouts = renamed(
            num_completions,
            num_rollouts_old,
            new="-G/--num-completions",
            old="-n/--num-rollouts",
            default=paper.COMPLETIONS,
            command="rollout",
        )
        batch_size = renamed(
            contexts_per_call,
            batch_size_old,
            new="--contexts-per-call",
            old="--batch-size",
            default=32,
            command="rollout",
        )
        from rpt_cli.prompts import TemplateError, load_template

        if list_templates:
            from rpt_cli.prompts import list_templates as builtin_templates

            for item in builtin_templates():
                sys.stdout.write(f"== {item.name}: {item.description}\n{item.text}\n\n")
            return
        from rpt_cli.answers import check_answer, prompt_defaults

        defaults = prompt_defaults(check_answer(answer))
        template = defaults["template"] if template is None else template
        chat = defaults["chat"] if chat is None else chat
        max_new_tokens = defaults["max_new_tokens"] if max_new_tokens is None else max_new_tokens
        for name, value in (
            ("--num-completions", num_rollouts),
            ("--contexts-per-call", batch_size),
            ("--max-new-tokens", max_new_tokens),
            ("--max-prompt-tokens", max_prompt_tokens),
            ("--limit", limit),
            ("--max-batch-sequences", max_batch_sequences),
            ("--tensor-parallel-size", tensor_parallel_size),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        from rpt_cli.generation.base import check_sampling

        check_sampling(temperature, top_p, top_k)
        check_memory(
            batch_size,
            num_rollouts,
            max_new_tokens,
            names="--contexts-per-call × -G × --max-new-tokens",
            override=no_memory_check,
        )
        try:
            prompt_template = load_template(template)
        except TemplateError as exc:
            raise UsageError(str(exc)) from None
        from rpt_cli.generation.base import SamplingConfig
        from rpt_cli.jsonl import source_name
        from rpt_cli.rollout import RolloutChunkWorker, RolloutStats, numbered_samples

        sampling = SamplingConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed
        )
        from rpt_cli.cluster import ray_settings

        cluster = ray_settings(ray, ray_workers, ray_gpus_per_worker)
        check_input(input)
        check_outputs(input, ("-o", output))
        source = source_name(input)

        def samples(stats: ReadStats | None = None):
            return numbered_samples(
                read_records(input, sample_context, skip_bad=skip_bad, stats=stats, with_lines=True),
                source=source,
                unique=True,
                limit=limit,
            )

        total = limit  # the contexts to sample, where known: the progress display's total
        if not skip_bad and input != STDIO and os.path.isfile(input):
            total = sum(1 for _ in samples())  # a bad line stops the run before the model loads
        read_stats, stats = ReadStats(), RolloutStats()
        engine_options = dict(
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            seed=seed,
            max_batch_sequences=max_batch_sequences,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
        )
        from rpt_cli.generation.session import PromptSettings

        prompt_settings = PromptSettings(
            template=prompt_template,
            chat=chat,
            think_prefix=think_prefix,
            max_prompt_tokens=max_prompt_tokens,
            answer=answer,
        )
        if cluster is not None:
            engine_name = rollout_on_ray(
                cluster,
                samples(read_stats),
                output,
                RolloutChunkWorker(backend, model, engine_options, prompt_settings, num_rollouts, sampling),
                batch_size,
                stats,
                resume=resume,
                total=total,
            )
        else:
            engine_name = _rollout_here(
                samples(read_stats),
                output,
                resume=resume,
                backend=backend,
                model=model,
                engine_options=engine_options,
                prompt_settings=prompt_settings,
                sampling=sampling,
                num_rollouts=num_rollouts,
                batch_size=batch_size,
                stats=stats,
                total=total,
            )
        stderr.print(
            f"rollout: {stats.contexts:,} contexts x {num_rollouts} = {stats.completions:,} completions, "
            f"{stats.new_tokens:,} new tokens in {stats.generate_seconds:.1f} s "
            f"({stats.tokens_per_second:,.0f} tokens/s, {engine_name}); "
            f"{stats.truncated:,} cut at --max-new-tokens"
        )
        if stats.skipped_done:
            stderr.print(f"rollout: skipped {stats.skipped_done:,} samples already in {output}")
        read_stats.report(stderr)


def _rollout_here(
    samples,
    output,
    *,
    resume,
    backend,
    model,
    engine_options,
    prompt_settings,
    sampling,
    num_rollouts,
    batch_size,
    stats,
    total=None,
) -> str:
    """The rollouts in this process, chunk by chunk, appended to a resumed output or written
    atomically; the engine's name. `total`: the samples to go through, where known (progress)."""
    from rpt_cli.generation import get_backend
    from rpt_cli.generation.session import GenerationSession
    from rpt_cli.resume import id_key, open_chunk_output
    from rpt_cli.rollout import rollout_chunks

    with open_chunk_output(output, resume=resume) as out:
        if resume:
            # what can be compared before the model loads; the rest once it has
            _check_resumed(out, output, prompt_settings, sampling, num_rollouts)
        engine = get_backend(backend, model, **engine_options)
        with GenerationSession(engine, prompt_settings) as session:
            metadata = session.metadata(sampling, num_rollouts)
            if resume:
                out.check_settings(metadata)
            done = out.done if resume else None
            with spinner("rollout: loading done, sampling the first chunk") as say:
                for records in rollout_chunks(
                    samples,
                    engine,
                    session.builder,
                    n=num_rollouts,
                    sampling=sampling,
                    chunk_contexts=batch_size,
                    metadata=metadata,
                    stats=stats,
                    is_done=(lambda sample: id_key(sample["id"]) in done) if resume else None,
                ):
                    out.write_chunk(records)
                    say(
                        f"rollout: {stats.contexts:,} contexts, {stats.new_tokens:,} new tokens, "
                        f"{stats.tokens_per_second:,.0f} tokens/s",
                        stats.contexts + stats.skipped_done,
                        total,
                    )
    return engine.name


def _check_resumed(out, output, prompt_settings, sampling, num_rollouts: int) -> None:
    """What a resumed output's settings can be compared with before any model loads (the rest,
    the engine's, once it has); say how much is done already."""
    out.check_settings(
        {
            "answer": prompt_settings.answer,
            "template": prompt_settings.template.name,
            "think_prefix": prompt_settings.think_prefix,
            "n": num_rollouts,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "max_new_tokens": sampling.max_new_tokens,
            "max_prompt_tokens": prompt_settings.max_prompt_tokens,
            "seed": sampling.seed,
        }
    )
    if out.dropped_partial:
        stderr.print(f"rollout: dropped an incomplete last line of {output} (an interrupted write)")
    stderr.print(f"rollout: resuming: {len(out.done):,} samples already in {output}")


def _todo_chunks(chunks, done: set, stats):
    """`sample_chunks` less the samples a resumed output holds: each chunk keeps its number (and
    so its seed), as `rollout_chunks(is_done=…)` keeps it in one process; empty chunks go."""
    from rpt_cli.resume import id_key

    for index, chunk in chunks:
        todo = [sample for sample in chunk if id_key(sample["id"]) not in done]
        stats.skipped_done += len(chunk) - len(todo)
        if todo:
            yield index, todo


def rollout_on_ray(
    cluster_settings, samples, output, worker, batch_size: int, stats, *, resume: bool = False, total=None
) -> str:
    """The rollouts on a Ray cluster: chunks of --contexts-per-call contexts, each sampled by a
    worker with the chunk's own seed (as one process samples it), written in input order (appended
    to a resumed output, skipping the samples it holds); the engine's name.
    `stats.generate_seconds` is the wall time of the whole run on the cluster."""

    from rpt_cli.cluster import RayCluster
    from rpt_cli.generation import resolve_backend_name
    from rpt_cli.resume import open_chunk_output
    from rpt_cli.rollout import sample_chunks

    with open_chunk_output(output, resume=resume) as out:
        units = sample_chunks(samples, batch_size)
        if resume:
            _check_resumed(out, output, worker.prompt, worker.sampling, worker.n)
            units = _todo_chunks(units, out.done, stats)
        with RayCluster(cluster_settings) as cluster, spinner("rollout: starting the Ray workers") as say:
            _sample_on_ray(cluster, units, worker, out, stats, say, check_engine=resume, total=total)
    return f"ray, {cluster_settings.workers} worker{'s' if cluster_settings.workers != 1 else ''}, {resolve_backend_name(worker.backend)}"


def _sample_on_ray(cluster, units, worker, out, stats, say, *, check_engine: bool, total=None) -> None:
    """The units through the cluster's workers, their records written in order; progress to `say`."""
    import time

    started = time.perf_counter()

    def arrived(result) -> None:
        _, chunk_stats = result
        for name in ("contexts", "completions", "truncated", "new_tokens"):
            setattr(stats, name, getattr(stats, name) + getattr(chunk_stats, name))
        stats.generate_seconds = time.perf_counter() - started
        say(
            f"rollout: {stats.contexts:,} contexts, {stats.new_tokens:,} new tokens, "
            f"{stats.tokens_per_second:,.0f} tokens/s",
            stats.contexts + stats.skipped_done,
            total,
        )

    for records, _ in cluster.results(units, worker, on_result=arrived):
        if check_engine and records:
            # the settings only the engine knows (model, backend, chat), as the workers recorded them
            out.check_settings(records[0]["rollout"])
            check_engine = False
        out.write_chunk(records)
    stats.generate_seconds = time.perf_counter() - started
