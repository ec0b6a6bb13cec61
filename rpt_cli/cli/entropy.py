"""`rpt entropy`: top-k entropy of every position of a corpus. The command only: the work is in the core modules."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import typer

from rpt_cli import paper
from rpt_cli.cli.app import (
    DeviceOpt,
    DtypeOpt,
    EnforceEagerOpt,
    GpuMemoryOpt,
    IdFieldOpt,
    InputArg,
    ModelOpt,
    OutputOpt,
    RayGpusOpt,
    RayOpt,
    RayWorkersOpt,
    SkipBadOpt,
    TensorParallelOpt,
    TextFieldOpt,
    TrustOpt,
    app,
    check_input,
    check_numbers,
    check_outputs,
    old_name_option,
    parse_shard,
    prevalidate,
    renamed,
)
from rpt_cli.console import cli_errors, input_size, spinner, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, ReadStats, RecordWriter, read_records
from rpt_cli.models import BUILTIN_NAME


@app.command(epilog="Example:  rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 > samples.jsonl")
def entropy(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: ModelOpt = BUILTIN_NAME,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    entropy_top_k: Annotated[
        int,
        typer.Option(
            "--entropy-top-k",
            metavar="K",
            help=f"The entropy is over the model's K most likely next tokens, renormalized (paper: {paper.ENTROPY_TOP_K}); "
            "recorded as entropy_top_k.",
        ),
    ] = paper.ENTROPY_TOP_K,
    top_k_old: Annotated[int | None, old_name_option("--entropy-top-k", "--top-k")] = None,
    text_field: TextFieldOpt = "text",
    text_template: Annotated[
        str | None,
        typer.Option(
            metavar="TEMPLATE",
            help="Build each document from several fields, e.g. '{problem}\\n\\n{solution}' (\\n: a newline); the "
            "built text is scored and written under --text-field, so the offsets index it.",
        ),
    ] = None,
    id_field: IdFieldOpt = "id",
    dataset: Annotated[
        str | None,
        typer.Option(help="Read the corpus through `datasets` instead: a parquet/JSON/CSV file or a hub name."),
    ] = None,
    dataset_split: Annotated[str, typer.Option(help="Split of --dataset.")] = "train",
    dataset_config: Annotated[str | None, typer.Option(help="Configuration name of --dataset.")] = None,
    window: Annotated[
        int, typer.Option(help="Tokens per forward pass at most (capped by the model's maximum).")
    ] = 4096,
    overlap: Annotated[
        int | None,
        typer.Option(
            help="Context tokens carried into the next window of a long document (default: a quarter of the window)."
        ),
    ] = None,
    batch_tokens: Annotated[int, typer.Option(help="Padded tokens per batch (rows × longest row).")] = 8192,
    shard: Annotated[
        str | None,
        typer.Option(metavar="I/N", help="Score only the I-th of N disjoint slices of the input (1-based), e.g. 3/8."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="hf (transformers: the decoder, then the output layer on the scored positions only) or vllm "
            "(vLLM's prompt log-probabilities; same tokens, same windows, same offsets)."
        ),
    ] = "hf",
    tensor_parallel_size: TensorParallelOpt = 1,
    gpu_memory_utilization: GpuMemoryOpt = 0.9,
    enforce_eager: EnforceEagerOpt = False,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 2,
    ray_gpus_per_worker: RayGpusOpt = 0.0,
    skip_bad: SkipBadOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Score every position of a corpus with a proxy model's top-k entropy.

    Adds [bold]offsets[/] (UTF-8 byte offsets of the model's tokens), [bold]entropy[/] (nats, null
    where the model had no context), [bold]entropy_model[/], [bold]entropy_top_k[/] and [bold]tokenizer[/] (name and fingerprint of the tokenizer the offsets come from) to each document.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.cluster import ray_settings
        from rpt_cli.entropy import ENTROPY_BACKENDS, EntropyEngine
        from rpt_cli.jsonl import read_dataset
        from rpt_cli.models import display_name
        from rpt_cli.records import corpus_document

        shard_slice = parse_shard(shard)
        top_k = renamed(
            entropy_top_k,
            top_k_old,
            new="--entropy-top-k",
            old="--top-k",
            default=paper.ENTROPY_TOP_K,
            command="entropy",
        )
        if top_k < 1:
            raise UsageError("--entropy-top-k must be at least 1")
        if batch_tokens < 1 or window < 2:
            raise UsageError("--batch-tokens must be positive and --window at least 2")
        if backend not in ENTROPY_BACKENDS:
            raise UsageError(f"--backend {backend}: choose one of {', '.join(ENTROPY_BACKENDS)}")
        cluster = ray_settings(ray, ray_workers, ray_gpus_per_worker)
        template = None
        if text_template is not None:
            from rpt_cli.documents import TextTemplate, templated_document

            template = TextTemplate.parse(text_template)
            validate = templated_document(template, id_field)
        else:
            validate = corpus_document(text_field, id_field)
        stats = ReadStats()
        if dataset is not None:
            if input != STDIO:
                raise UsageError("give either an INPUT file or --dataset, not both")
            records = read_dataset(
                dataset,
                validate,
                split=dataset_split,
                config=dataset_config,
                skip_bad=skip_bad,
                stats=stats,
                shard=shard_slice,
            )
        else:
            check_input(input)
        check_outputs(dataset or input, ("-o", output))
        if dataset is None:
            if not skip_bad:
                prevalidate(input, validate, shard_slice)
            records = read_records(input, validate, skip_bad=skip_bad, stats=stats, shard=shard_slice, with_lines=True)

        from rpt_cli.holdout import ContentIds

        content_id = ContentIds(id_field)

        def with_ids():
            for _, doc in records:
                if doc.get(id_field) is None:  # named by its content, not its line: unique across files
                    doc[id_field] = content_id(doc)
                if template is not None:
                    doc[text_field] = template.fill(doc)  # what is scored, and what the offsets index
                yield doc

        engine = EntropyEngine(
            model,
            backend=backend,
            device=device,
            dtype=dtype,
            top_k=top_k,
            window=window,
            overlap=overlap,
            batch_tokens=batch_tokens,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
        )
        size = input_size(input) if dataset is None else None  # progress: bytes of it read
        if cluster is not None:
            s = score_on_ray(
                engine,
                cluster,
                with_ids(),
                output,
                text_field,
                display_name(model),
                progress=lambda: (stats.bytes, size),
            )
            where = f"ray, {cluster.workers} worker{'s' if cluster.workers != 1 else ''}, {backend}"
        else:
            scorer, notes = engine.open()
            for note in notes:
                stderr.print(f"entropy: note: {note}")
            with closing(scorer), spinner("entropy: starting") as say, RecordWriter(output) as out:

                def show(s):
                    say(
                        f"entropy: {s.documents:,} documents, {s.tokens:,} tokens, {s.tokens_per_second:,.0f} tokens/s",
                        stats.bytes,
                        size,
                    )

                out.write_all(scorer.score(with_ids(), text_field, model_name=display_name(model), on_chunk=show))
            s, where = scorer.stats, scorer.device_name
        stderr.print(
            f"entropy: {s.documents:,} documents, {s.tokens:,} tokens in {s.seconds:.1f} s "
            f"({s.tokens_per_second:,.0f} tokens/s, {where})"
        )
        if s.dropped_bytes:
            stderr.print(
                f"warning: {s.dropped_documents:,} document(s) hold {s.dropped_bytes:,} byte(s) the "
                f"tokenizer has no token for: they stay in the text, inside the span of the "
                f"token after them, but the model does not see them"
            )
        stats.report(stderr)


def score_on_ray(engine, settings, docs, output, text_field: str, model_name: str, progress=lambda: (None, None)):
    """Score the documents on a Ray cluster, chunk by chunk as one process cuts them, and write
    them in input order; the ScoreStats of the run, its seconds the wall time from the first chunk
    sent to the last written (the workers' model loading included). `progress()`: (done, total)
    of the input, for the progress display."""
    import time

    from rpt_cli.cluster import RayCluster
    from rpt_cli.entropy import EntropyChunkWorker, ScoreStats, document_chunks

    # the chunks are the single process's: the same batches, so the same entropies, bit for bit
    chunks = document_chunks(docs, text_field, engine.chunk_tokens())
    totals, notes_shown = ScoreStats(), set()
    with (
        RayCluster(settings) as cluster,
        spinner("entropy: starting the Ray workers") as say,
        RecordWriter(output) as out,
    ):
        started = time.perf_counter()

        def arrived(result) -> None:
            _, stats, notes = result
            for name in ("documents", "tokens", "dropped_bytes", "dropped_documents"):
                setattr(totals, name, getattr(totals, name) + getattr(stats, name))
            totals.seconds = time.perf_counter() - started
            say(
                f"entropy: {totals.documents:,} documents, {totals.tokens:,} tokens, {totals.tokens_per_second:,.0f} tokens/s",
                *progress(),
            )
            for note in notes:
                if note not in notes_shown:
                    notes_shown.add(note)
                    stderr.print(f"entropy: note: {note}")

        for scored, _, _ in cluster.results(
            chunks, EntropyChunkWorker(engine, text_field, model_name), on_result=arrived
        ):
            out.write_all(scored)
        totals.seconds = time.perf_counter() - started
    return totals
