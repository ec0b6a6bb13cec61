"""`rpt curves`: the mean reward per training step of runs. The command only: the work is in the core modules."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from rpt_cli.cli.app import PlotOpt, app, check_numbers, check_outputs
from rpt_cli.console import cli_errors, stderr
from rpt_cli.errors import UsageError


@app.command(
    epilog="Examples:  rpt curves runs/demo -o reward.png\n\n"
    "  rpt curves runs/direct runs/boxed --window 10 -o compare.png | jq -c '[.run, .reward_start, .reward_end]'"
)
def curves(
    runs: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN...",
            show_default=False,
            help="rpt train run folders (their metrics.jsonl) or metrics.jsonl files; several are drawn together.",
        ),
    ],
    output: PlotOpt = None,
    window: Annotated[
        int,
        typer.Option(
            help="Steps in the running mean drawn through the points, and in the start and end means of the summary."
        ),
    ] = 5,
    title: Annotated[str | None, typer.Option(help="Title of the plot.")] = None,
) -> None:
    """The mean reward per training step of one or more runs: a table, a summary and a plot.

    Writes one JSON line per run to standard output ([bold]run[/], [bold]steps[/], [bold]reward_start[/] and [bold]reward_end[/] (the mean of the first and last --window steps), [bold]reward_change[/], and [bold]reward[/]: [step, mean] pairs), a table to standard error, and with -o a PNG. Reads the logs only, so it works while a run trains.
    """
    with cli_errors():
        check_numbers(locals())
        from rich.table import Table

        from rpt_cli.curves import plot_curves, read_curve, summary, table_rows
        from rpt_cli.jsonl import dumps

        if window < 1:
            raise UsageError("--window must be at least 1")
        if output is not None:
            from rpt_cli.scaling import check_plot_path

            check_plot_path(output)
            check_outputs(
                [os.path.join(spec, "metrics.jsonl") if os.path.isdir(spec) else spec for spec in runs], ("-o", output)
            )
        read = [read_curve(spec) for spec in runs]
        for curve in read:
            result = summary(curve, window)
            sys.stdout.buffer.write(dumps(result))
            table = Table(
                title=f"{curve.name}: {result['steps']} steps; mean reward of the first {result['window']} "
                f"{_fmt(result['reward_start'])}, of the last {result['window']} {_fmt(result['reward_end'])}",
                title_justify="left",
            )
            for name in ("step", "reward", f"mean of {window}", "no-var", "no-pred"):
                table.add_column(name, justify="right")
            for row in table_rows(curve, window):
                table.add_row(*row)
            stderr.print(table)
        sys.stdout.flush()
        if output is not None:
            plot_curves(read, output, window=window, title=title)
            stderr.print(f"curves: plot written to {output}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
