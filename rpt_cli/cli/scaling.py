"""`rpt scaling`: accuracy against training compute. The command only: the work is in the core modules."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rpt_cli import paper
from rpt_cli.cli.app import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    PlotOpt,
    TrustOpt,
    app,
    check_input,
    check_numbers,
    check_outputs,
    old_name_option,
    renamed,
)
from rpt_cli.console import cli_errors, spinner, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, RecordWriter, read_records
from rpt_cli.records import evaluation_sample, report

SCALING_EXAMPLES = (
    "rpt scaling runs/rpt1 --samples val_samples.jsonl -o scaling.png\n\n"
    "  rpt eval val_samples.jsonl -m runs/rpt1/checkpoint-100 -m runs/rpt1/checkpoint-200 -m runs/rpt1/final "
    "| rpt scaling -o scaling.png\n\n"
    "  rpt scaling reports.jsonl --metrics runs/rpt1/metrics.jsonl --mode reasoning --split hard"
)


@app.command(epilog=f"Examples:  {SCALING_EXAMPLES}")
def scaling(
    input: Annotated[
        str,
        typer.Argument(
            metavar="RUN|REPORTS",
            show_default=False,
            help="An rpt train run folder (its checkpoints are evaluated here), or reports of rpt eval (JSONL; "
            "'-' or nothing reads standard input).",
        ),
    ] = STDIO,
    output: PlotOpt = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Take each report's compute from this metrics.jsonl of rpt train, by the report's step "
            "(default: the flops the report carries).",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="Fit the reports of this mode, ntp or reasoning (needed when the reports hold both); with a run "
            "folder, the mode to evaluate in (default: ntp)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Fit one split, easy, medium or hard, or all of them.")] = "all",
    title: Annotated[str | None, typer.Option(help="Title of the plot.")] = None,
    samples: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Run folder: the samples to evaluate on, e.g. held-out ones (default: the run's "
            "training samples, from its config.yaml).",
        ),
    ] = None,
    reports: Annotated[
        str | None,
        typer.Option(
            "--reports",
            metavar="FILE",
            help="Run folder: also write the checkpoints' evaluation reports here (JSONL; rpt scaling reads them back).",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Run folder: evaluate only the first N samples.", metavar="N")
    ] = None,
    num_completions: Annotated[
        int, typer.Option("--num-completions", "-G", help="Run folder, reasoning: completions per context.")
    ] = 1,
    num_samples_old: Annotated[int | None, old_name_option("-G/--num-completions", "--num-samples", "-n")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Run folder, reasoning: longest completion (default: the run's).")
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Run folder, reasoning: sampling temperature.")
    ] = paper.TEMPERATURE,
    reward: Annotated[
        str, typer.Option("--reward", help="Run folder, reasoning: reward function that decides correctness.")
    ] = "prefix",
    fn_old: Annotated[str | None, old_name_option("--reward", "--fn")] = None,
    backend: BackendOpt = "auto",
    seed: Annotated[int, typer.Option(help="Run folder, reasoning: seed of the sampling.")] = 0,
    batch_tokens: Annotated[int, typer.Option(help="Run folder, ntp: padded tokens per forward pass.")] = 8192,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fit accuracy against training compute, P(C) = A / C^α + P* per split (the paper's Eq. 5).

    Writes the points and the fits ([bold]A[/], [bold]alpha[/], [bold]p_star[/], [bold]r2[/]) as one JSON object to standard output, a table to standard error, and with -o a plot in the style of Figure 5. Fewer than three points, non-positive compute or a fit that fails stop with a one-line error (exit 2).
    """
    with cli_errors():
        check_numbers(locals())
        from pathlib import Path

        from rpt_cli.jsonl import dumps, source_name
        from rpt_cli.scaling import (
            check_plot_path,
            fit_splits,
            plot_scaling,
            points_from_reports,
            scaling_result,
            splits_to_fit,
        )

        if mode is not None and mode not in ("ntp", "reasoning"):
            raise UsageError(f"--mode {mode}: choose ntp or reasoning")
        if output is not None:
            check_plot_path(output)
        check_outputs(
            [input, metrics, samples],
            *([("-o", output)] if output is not None else []),
            *([("--reports", reports)] if reports is not None else []),
        )
        flops_by_step = None
        if metrics is not None:
            from rpt_cli.evaluate import read_flops

            if not Path(metrics).is_file():
                raise UsageError(f"--metrics {metrics}: no such file")
            flops_by_step = read_flops(Path(metrics))
        run = Path(input) if input != STDIO and Path(input).is_dir() else None
        if run is not None:
            numbered = list(
                enumerate(
                    _evaluate_run(
                        run,
                        samples=samples,
                        reports_path=reports,
                        mode=mode or "ntp",
                        split=split,
                        limit=limit,
                        num_completions=renamed(
                            num_completions,
                            num_samples_old,
                            new="-G/--num-completions",
                            old="-n/--num-samples",
                            default=1,
                            command="scaling",
                        ),
                        max_new_tokens=max_new_tokens,
                        temperature=temperature,
                        reward=renamed(reward, fn_old, new="--reward", old="--fn", default="prefix", command="scaling"),
                        backend=backend,
                        seed=seed,
                        batch_tokens=batch_tokens,
                        device=device,
                        dtype=dtype,
                        trust_remote_code=trust_remote_code,
                    ),
                    start=1,
                )
            )
            source = str(run)
        else:
            check_input(input)
            source = source_name(input)
            numbered = list(read_records(input, report, with_lines=True))
        fit_mode, answer, points = points_from_reports(
            numbered, source, mode=mode, flops_by_step=flops_by_step, metrics_name=metrics or "metrics.jsonl"
        )
        fits = fit_splits(points, splits_to_fit(points, split))
        if output is not None:
            plot_scaling(points, fits, output, mode=fit_mode, answer=answer, title=title)
        sys.stdout.buffer.write(dumps(scaling_result(fit_mode, points, fits, output, answer)))
        sys.stdout.flush()
        from rich.table import Table

        table = Table(title=f"P(C) = A / C^α + P* ({fit_mode}, {len(points)} checkpoints)", title_justify="left")
        for name in ("split", "A", "α", "P*", "R²", "points"):
            table.add_column(name, justify="left" if name == "split" else "right")
        for name, fit in fits.items():
            flag = " (at a bound: " + ", ".join(fit.at_bound) + ")" if fit.at_bound else ""
            table.add_row(
                name + flag, f"{fit.A:.4g}", f"{fit.alpha:.4f}", f"{fit.p_star:.4f}", f"{fit.r2:.4f}", str(fit.points)
            )
        stderr.print(table)
        if output is None:
            stderr.print("scaling: no plot written (pass -o FILE.png for one)")
        else:
            stderr.print(f"scaling: plot written to {output}")


def _note_once(text: str, noted: set[str]) -> None:
    """Print a note about the samples for the first checkpoint only: the notes of the others say
    the same of another checkpoint (same tokenizer)."""
    key = text.split(": ", 2)[-1].split(" the policy")[0]
    if key not in noted:
        noted.add(key)
        stderr.print(text, markup=False)


def _evaluate_run(
    run,
    *,
    samples,
    reports_path,
    mode,
    split,
    limit,
    num_completions,
    max_new_tokens,
    temperature,
    reward,
    backend,
    seed,
    batch_tokens,
    device,
    dtype,
    trust_remote_code,
) -> list[dict]:
    """rpt scaling on a run folder: its checkpoints' reports, with progress on standard error."""

    from rpt_cli.evaluate import (
        EvalConfig,
        Progress,
        select_samples,
    )
    from rpt_cli.rollout import numbered_samples
    from rpt_cli.scaling import evaluate_run, run_samples_path

    samples, own = run_samples_path(run, samples)
    config = EvalConfig(
        modes=(mode,),
        split=split,
        limit=limit,
        seed=seed,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        batch_tokens=batch_tokens,
        backend=backend,
        num_completions=num_completions,
        reward=reward,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
    )
    config.check()
    chosen = select_samples(
        numbered_samples(
            read_records(samples, evaluation_sample, with_lines=True), source=samples, unique=True, with_lines=True
        ),
        split,
        limit,
    )
    if not chosen:
        raise UsageError(f"{samples}: no samples{'' if split == 'all' else f' in split {split}'} to evaluate")
    if own:
        stderr.print(f"scaling: evaluating on the run's training samples {samples} (--samples FILE for held-out ones)")
    noted: set[str] = set()  # a note about the samples, once, not once per checkpoint
    with spinner("scaling: starting") as say:
        show = Progress(
            on_start=lambda text: say(f"scaling: {text}"),
            on_count=lambda text, done, total: say(f"scaling: {text}", done, total),
            on_note=lambda text: _note_once(f"scaling: note: {text}", noted),
        )
        reports = evaluate_run(run, chosen, config, source=samples, progress=show)
    if reports_path is not None:
        with RecordWriter(reports_path) as writer:
            writer.write_all(reports)
    return reports
