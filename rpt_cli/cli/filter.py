"""`rpt filter`: positions of scored documents become samples. The command only: the work is in the core modules."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from rpt_cli.cli.app import (
    IdFieldOpt,
    InputArg,
    OutputOpt,
    SkipBadOpt,
    TextFieldOpt,
    app,
    check_input,
    check_numbers,
    check_outputs,
)
from rpt_cli.console import cli_errors, input_size, spinner, stderr
from rpt_cli.errors import SettingError, UsageError
from rpt_cli.jsonl import STDIO, ReadStats, RecordWriter, read_records
from rpt_cli.records import scored_document


@app.command(
    name="filter", epilog="Example:  rpt entropy corpus.jsonl | rpt filter --split medium --per-doc 8 > samples.jsonl"
)
def filter_(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    min: Annotated[
        float | None, typer.Option("--min", help="Keep positions whose entropy exceeds X.", metavar="X")
    ] = None,
    max: Annotated[
        float | None, typer.Option("--max", help="Keep positions whose entropy is at most X.", metavar="X")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Keep one of the paper's nested splits: easy (> 0.5), medium (> 1.0), hard (> 1.5)."),
    ] = None,
    min_context_tokens: Annotated[
        int,
        typer.Option(
            help="Skip positions with fewer context tokens (the start of a document looks artificially uncertain)."
        ),
    ] = 16,
    target_tokens: Annotated[
        int,
        typer.Option(
            help="Ground-truth tokens carried in target and boundaries (more when the last one ends inside a character). "
            "A prediction longer than the target can never score: Eq. 3 needs its end among the boundaries."
        ),
    ] = 8,
    max_context_tokens: Annotated[
        int | None,
        typer.Option(help="Cut the context from the left, at a token boundary, to at most this many tokens."),
    ] = None,
    per_doc: Annotated[
        int | None, typer.Option(help="Keep at most N positions per document, at random.", metavar="N")
    ] = None,
    fraction: Annotated[float | None, typer.Option(help="Keep each position with probability F.", metavar="F")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --per-doc and --fraction (recorded as filter_seed).")] = 0,
    keep_fields: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-fields",
            metavar="NAME",
            help="Copy this document field into each of its samples even when it is over 64 KiB (repeat for several); "
            "larger fields are otherwise left out of documents with more than one sample, with a note.",
        ),
    ] = None,
    text_field: TextFieldOpt = "text",
    id_field: IdFieldOpt = "id",
    skip_bad: SkipBadOpt = False,
) -> None:
    """Select positions of scored documents and write them as samples (context, target, boundaries, split)."""
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.filter import OPTIONS as FILTER_OPTIONS
        from rpt_cli.filter import FilterOptions, FilterStats, filter_documents
        from rpt_cli.jsonl import source_name

        opts = FilterOptions(
            min_entropy=min,
            max_entropy=max,
            split=split,
            min_context_tokens=min_context_tokens,
            target_tokens=target_tokens,
            max_context_tokens=max_context_tokens,
            per_doc=per_doc,
            fraction=fraction,
            seed=seed,
            text_field=text_field,
            id_field=id_field,
            keep_fields=tuple(keep_fields or ()),
        )
        try:
            opts.check()
        except SettingError as exc:
            raise UsageError(exc.worded(FILTER_OPTIONS)) from None
        check_input(input)
        check_outputs(input, ("-o", output))
        read_stats, stats = ReadStats(), FilterStats()
        started = time.perf_counter()
        docs = read_records(
            input, scored_document(text_field, id_field), skip_bad=skip_bad, stats=read_stats, with_lines=True
        )
        size = input_size(input)

        def watched(docs, say):
            for count, doc in enumerate(docs, start=1):
                if count % 256 == 0:
                    rate = stats.documents / ((time.perf_counter() - started) or 1e-9)
                    say(
                        f"filter: {stats.documents:,} documents, {sum(stats.samples.values()):,} samples, "
                        f"{rate:,.0f} documents/s",
                        read_stats.bytes,
                        size,
                    )
                yield doc

        with spinner("filter: reading") as say, RecordWriter(output) as out:
            out.write_all(filter_documents(watched(docs, say), opts, stats, source=source_name(input)))
        seconds = time.perf_counter() - started
        per_split = ", ".join(
            f"{name} {stats.samples[name]:,}"
            for name in ("easy", "medium", "hard", "none")
            if stats.samples[name] or name != "none"
        )
        stderr.print(
            f"filter: {stats.documents:,} documents, {stats.positions:,} positions -> "
            f"{sum(stats.samples.values()):,} samples ({per_split}) in {seconds:.1f} s"
        )
        if stats.mid_character:
            stderr.print(f"filter: skipped {stats.mid_character:,} positions that start inside a UTF-8 character")
        for name, documents in stats.uncopied_fields.items():
            stderr.print(
                f"filter: note: field {name!r} is over 64 KiB in {documents:,} document(s) and was not copied "
                f"into each of their samples (it would repeat once per sample); --keep-fields {name} copies it",
                markup=False,
            )
        read_stats.report(stderr)
