"""`rpt holdout`: a deterministic document-level hold-out. The command only: the work is in the core modules."""

from __future__ import annotations

from typing import Annotated

import typer

from rpt_cli.cli.app import (
    IdFieldOpt,
    InputArg,
    OutputOpt,
    SkipBadOpt,
    app,
    check_input,
    check_numbers,
    check_outputs,
)
from rpt_cli.console import cli_errors, stderr
from rpt_cli.errors import SettingError, UsageError
from rpt_cli.jsonl import STDIO

HOLDOUT_EXAMPLES = (
    "rpt holdout examples/data/corpus.jsonl --documents 2 --holdout-output val.jsonl -o train.jsonl\n\n"
    "  rpt holdout samples.jsonl --fraction 0.05 --seed 1 --holdout-output val_samples.jsonl > train_samples.jsonl"
)


@app.command(epilog=f"Examples:  {HOLDOUT_EXAMPLES}")
def holdout(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    holdout_output: Annotated[
        str | None,
        typer.Option(
            "--holdout-output",
            metavar="FILE",
            show_default=False,
            help="Write the held-out records here (atomically); required. The others go to -o (or standard output).",
        ),
    ] = None,
    documents: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Hold out exactly N documents (the paper: 200), those whose hash of seed and id is smallest.",
        ),
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(
            metavar="F", help="Hold out each document whose hash of seed and id falls in the first F of the range."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the hash: another seed, another hold-out.")] = 0,
    id_field: IdFieldOpt = "id",
    skip_bad: SkipBadOpt = False,
) -> None:
    """Split records into training and held-out sides by document: every record of a document (the document itself, or all its samples) goes to one side, chosen by a hash of the seed and the document id, whatever the order of the records or the machine.

    The document is a record's [bold]doc_id[/] (samples, rollouts), else its --id-field (documents), else its line number (as rpt entropy numbers documents). Held-out records get [bold]held_out[/]: true, which rpt filter carries into their samples and rpt train warns about.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.holdout import HoldoutOptions, HoldoutStats, Lines, split_records
        from rpt_cli.jsonl import RecordWriter

        opts = HoldoutOptions(documents=documents, fraction=fraction, seed=seed, id_field=id_field)
        try:
            opts.check()
        except SettingError as exc:
            raise UsageError(exc.worded()) from None
        if holdout_output is None:
            raise UsageError("--holdout-output FILE is required: where the held-out records go")
        check_input(input)
        check_outputs(input, ("-o", output), ("--holdout-output", holdout_output))
        stats = HoldoutStats()
        with (
            Lines(input) as lines,
            RecordWriter(output) as train_out,
            RecordWriter(holdout_output, "--holdout-output") as held_out,
        ):
            for out, record in split_records(lines, opts, skip_bad=skip_bad, stats=stats):
                (held_out if out else train_out).write(record)
        how = f"--documents {documents}" if documents is not None else f"--fraction {fraction}"
        stderr.print(
            f"holdout: {stats.documents:,} documents, {stats.records:,} records -> held out "
            f"{stats.held_out_documents:,} documents ({stats.held_out_records:,} records), kept "
            f"{stats.documents - stats.held_out_documents:,} ({stats.records - stats.held_out_records:,}); "
            f"{how}, seed {seed}",
            markup=False,
        )
        if documents is not None and stats.documents < documents:
            stderr.print(
                f"holdout: note: only {stats.documents:,} documents, fewer than --documents {documents}: all are held out"
            )
        stats.read.report(stderr)
