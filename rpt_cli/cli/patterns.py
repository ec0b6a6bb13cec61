"""`rpt patterns`: reasoning patterns in completions. The command only: the work is in the core modules."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rpt_cli.cli.app import PlotOpt, SkipBadOpt, app, check_input, check_outputs
from rpt_cli.console import cli_errors, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, ReadStats, read_records

PATTERNS_EXAMPLES = (
    "rpt patterns base_rollouts.jsonl rpt_rollouts.jsonl -o patterns.png\n\n"
    "  rpt patterns details.jsonl --name base --keywords my_keywords.yaml | jq -c '.patterns.hypothesis'\n\n"
    "  rpt patterns --list-keywords > my_keywords.json"
)


@app.command(epilog=f"Examples:  {PATTERNS_EXAMPLES}")
def patterns(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="INPUT...",
            show_default=False,
            help="Rollouts (rpt rollout) or rpt eval --details rows, one file per model; '-' or nothing reads "
            "standard input.",
        ),
    ] = None,
    output: PlotOpt = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Name the model of the INPUT in the same place (repeat, in order); default: the model the records "
            "name (rollout.model, or model in --details rows), else the file's name.",
        ),
    ] = None,
    keywords: Annotated[
        str | None,
        typer.Option(
            "--keywords",
            metavar="FILE",
            help="Count these patterns instead of the built-in ones: a JSON or YAML object of pattern name to "
            "a list of keywords (--list-keywords shows the shape).",
        ),
    ] = None,
    list_keywords: Annotated[
        bool,
        typer.Option("--list-keywords", help="Print the built-in keywords per pattern as JSON and exit."),
    ] = False,
    count: Annotated[
        str,
        typer.Option(
            "--count",
            help="What of each completion is counted: response (all of it, the thought and what follows, as the "
            "paper counts) or thought (the text before the last </think>).",
        ),
    ] = "response",
    title: Annotated[str | None, typer.Option(help="Title of the plot.")] = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """How often completions use each reasoning pattern (the paper's Figure 6): per model, the share of completions that contain the pattern's keywords, and its keywords per 1,000 words.

    The six patterns and their keywords are the paper's (Table 9): transition, reflection, breakdown, hypothesis, divergent thinking, deduction (docs/patterns.md). Writes one JSON line per model to standard output ([bold]model[/], [bold]completions[/], [bold]words[/], [bold]patterns[/], per split [bold]splits[/], and after the first model the relative difference of its shares, [bold]change[/], as the paper's +161.8 % hypothesis is computed), a table to standard error, and with -o a bar chart.
    """
    with cli_errors():
        from rpt_cli.jsonl import dumps, source_name
        from rpt_cli.patterns import COUNTED, PatternCounter, bounded_completions, builtin_keywords, load_keywords

        if list_keywords:
            sys.stdout.buffer.write(dumps(builtin_keywords().as_mapping()))
            sys.stdout.flush()
            return
        files = inputs or [STDIO]
        names = name or []
        if len(names) > len(files):
            raise UsageError(
                f"--name is given {len(names)} times for {len(files)} input(s): one name per INPUT at most"
            )
        if files.count(STDIO) > 1:
            raise UsageError("standard input ('-') can be read once: give it as one INPUT at most")
        for path in files:
            check_input(path)
        if output is not None:
            from rpt_cli.scaling import check_plot_path

            check_plot_path(output)
            check_outputs(files, ("-o", output))
        words = load_keywords(keywords) if keywords is not None else builtin_keywords()
        if count not in COUNTED:
            raise UsageError(f"--count {count}: choose one of {', '.join(COUNTED)}")
        counter = PatternCounter(words, count)
        stats = ReadStats()
        for index, path in enumerate(files):
            source = source_name(path)
            label = names[index] if index < len(names) else None
            for record in read_records(path, bounded_completions, skip_bad=skip_bad, stats=stats):
                counter.add(record, name=label, source=source)
        results = counter.results()
        if not results:
            raise UsageError("no completions to count: the input holds no rollouts or reasoning-mode rows")
        for result in results:
            sys.stdout.buffer.write(dumps(result))
        sys.stdout.flush()
        for table in _tables(results, words.names):
            stderr.print(table)
        if counter.ntp_rows:
            stderr.print(f"patterns: left out {counter.ntp_rows:,} ntp row(s) of rpt eval --details (no completions)")
        if output is not None:
            from rpt_cli.patterns import plot_patterns

            plot_patterns(results, words.names, output, title=title)
            stderr.print(f"patterns: plot written to {output}")
        stats.report(stderr)


def _tables(results: list[dict], names: list[str]):
    """One table per model: a row per pattern, a column per split (all, then the nested splits),
    each cell the share of completions using it (%) and its keywords per 1,000 words; models
    after the first add the relative difference of the share against the first (the paper's)."""
    from rich.table import Table

    for result in results:
        parts = [("all", result), *result["splits"].items()]
        table = Table(
            title=f"{result['model']}: {result['completions']:,} completions, {result['words']:,} words "
            f"({result['counted']}); % of completions using each pattern · keywords per 1,000 words",
            title_justify="left",
        )
        table.add_column("pattern")
        for split, part in parts:
            table.add_column(f"{split} (n={part['completions']:,})", justify="right")
        if "change" in result:
            table.add_column(f"share vs {result['baseline']}", justify="right")
        for pattern in names:
            cells = [_cell(part["patterns"][pattern]) for _, part in parts]
            if "change" in result:
                change = result["change"][pattern]
                cells.append("-" if change is None else f"{100 * change:+.1f}%")
            table.add_row(pattern, *cells)
        yield table


def _cell(entry: dict) -> str:
    if entry["share"] is None:
        return "-"
    rate = "-" if entry["per_1k_words"] is None else f"{entry['per_1k_words']:.1f}"
    return f"{100 * entry['share']:.1f}% · {rate}"
