"""The table for people (standard error)."""

from __future__ import annotations

from collections.abc import Sequence

from rpt_cli.answers import DIRECT

# --------------------------------------------------------------------------------------------
# The table for people (standard error)
# --------------------------------------------------------------------------------------------


def _percent_cell(entry: dict, *, k: int | None) -> str:
    if entry.get("accuracy") is None:
        return "-"
    low, high = entry["ci95"]
    cell = f"{100 * entry['accuracy']:.1f}\n[dim]{100 * low:.1f}–{100 * high:.1f}[/]"
    if k is not None and k > 1 and entry.get("pass_at_k") is not None:
        cell += f"\npass@{k} {100 * entry['pass_at_k']:.1f}"
    return cell


def _gain_cell(entry: dict) -> str:
    if entry.get("info_gain") is None:
        return "-"
    cell = f"{entry['info_gain']:+.3f}"
    if entry.get("info_gain_ci95"):
        low, high = entry["info_gain_ci95"]
        cell += f"\n[dim]{low:+.3f}–{high:+.3f}[/]"
    return cell + f"\n{100 * entry['accuracy']:.0f}% > 0"


def mode_label(report: dict) -> str:
    """ntp, reasoning (the boxed format) or direct (sampled guesses without reasoning)."""
    if report["mode"] == "reasoning" and report.get("answer") == DIRECT:
        return DIRECT
    return report["mode"]


def report_table(reports: Sequence[dict]):
    """One rich table for all reports: a row per model and mode, a column per split (accuracy in
    %, its 95 % Wilson interval below it, and pass@k in reasoning mode with k > 1; in gain mode
    the mean information gain, its interval and the share of thoughts with a positive gain)."""
    from rich.markup import escape
    from rich.table import Table

    splits: list[str] = []
    for report in reports:
        splits += [name for name in report["splits"] if name not in splits]
    first = reports[0] if reports else {"splits": {}, "n": 0}
    title = "Next-token accuracy (%) per entropy split, 95 % Wilson interval"
    if any(report["mode"] == "gain" for report in reports):
        title += "; gain: mean information gain (nats), 95 % interval, share of thoughts with a positive gain"
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    table.add_column("mode")
    for name in splits:
        table.add_column(f"{name}\nn={first['splits'].get(name, {}).get('n', 0):,}", justify="right")
    table.add_column(f"all\nn={first['n']:,}", justify="right")
    for report in reports:
        k = report.get("settings", {}).get("k") if report["mode"] != "ntp" else None
        mode = mode_label(report) + (f"\nk={k}" if k and k > 1 else "")
        if report["mode"] == "gain":
            cells = [_gain_cell(report["splits"].get(name, {})) for name in splits] + [_gain_cell(report)]
        else:
            k_shown = k if report["mode"] == "reasoning" else None
            cells = [_percent_cell(report["splits"].get(name, {}), k=k_shown) for name in splits]
            cells.append(_percent_cell(report, k=k_shown))
        table.add_row(escape(str(report["model"])), mode, *cells)
    return table


def _paired_cell(entry: dict | None, *, gain: bool) -> str:
    from rich.markup import escape

    if not entry or entry.get("difference") is None:
        return "-"
    # accuracy differences in percentage points, gain differences in nats
    scale, digits = (1, 3) if gain else (100, 1)
    cell = f"{scale * entry['difference']:+.{digits}f}"
    if entry.get("ci95"):
        low, high = entry["ci95"]
        cell += "\n[dim]" + escape(f"[{scale * low:+.{digits}f},{scale * high:+.{digits}f}]") + "[/]"
    return cell + f"\nn={entry['n']:,}\np={entry['p_value']:.2g}"


def paired_table(reports: Sequence[dict]):
    """The paired differences of the reports that have one (`paired`), a row per report, a
    column per split as in `report_table`; None when no report has one."""
    from rich.markup import escape
    from rich.table import Table

    compared = [report for report in reports if report.get("paired")]
    if not compared:
        return None
    splits: list[str] = []
    for report in compared:
        splits += [name for name in report["splits"] if name not in splits]
    title = (
        "Paired difference from the first model on the same samples (accuracy: percentage points; "
        "gain: nats), 95 % paired bootstrap interval, sign-test p"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("model\n[dim]vs baseline[/]")
    table.add_column("mode")
    for name in (*splits, "all"):
        table.add_column(name, justify="right")
    for report in compared:
        gain = report["mode"] == "gain"
        cells = [_paired_cell(report["splits"].get(name, {}).get("paired"), gain=gain) for name in splits]
        cells.append(_paired_cell(report["paired"], gain=gain))
        model = f"{escape(str(report['model']))}\n[dim]vs {escape(str(report['paired']['baseline']))}[/]"
        table.add_row(model, mode_label(report), *cells)
    return table
