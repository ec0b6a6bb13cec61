"""`rpt curves`: the mean reward per training step of one or more runs, from their metrics.jsonl,
as numbers (a table, and JSON with the start and end of each curve) and as a plot.

Nothing here imports torch: it reads logs, so it runs while a run is still training. A run's
metrics.jsonl is read as `rpt train` writes it (`files.read_log`: a torn last line of a run
killed mid-write is left out); a resumed run has each step once (`RunLog.keep_until`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rpt_cli.errors import InputError, UsageError
from rpt_cli.files import read_log

METRICS_FILE = "metrics.jsonl"
DEFAULT_WINDOW = 5


@dataclass(frozen=True)
class StepPoint:
    step: int
    reward: float | None  # mean reward of the completions trained on (None: none scored)
    zero_variance: float | None  # share of drawn groups whose G rewards were all equal
    no_prediction: float | None


@dataclass(frozen=True)
class Curve:
    name: str
    metrics: Path
    points: list[StepPoint]

    def rewards(self) -> list[tuple[int, float]]:
        return [(p.step, p.reward) for p in self.points if p.reward is not None]


def metrics_path(spec: str) -> Path:
    """A run folder of `rpt train` (its metrics.jsonl) or a metrics file itself."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / METRICS_FILE
        if not path.is_file():
            raise UsageError(f"{spec}: no {METRICS_FILE} in this folder (is it an rpt train run?)")
    elif not path.is_file():
        raise UsageError(f"{spec}: no such run folder or metrics file")
    return path


def _number(record: dict, key: str, source: str, lineno: int) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InputError(source, lineno, f'"{key}" must be a number, got {value!r}')
    return float(value)


def read_curve(spec: str, name: str | None = None) -> Curve:
    """The steps of one run, by step (a step logged twice keeps its last line)."""
    path = metrics_path(spec)
    source = str(path)
    by_step: dict[int, StepPoint] = {}
    for lineno, record in read_log(source):
        step = record.get("step")
        if type(step) is not int or step < 1:
            raise InputError(
                source,
                lineno,
                f'"step" must be a positive integer, got {step!r} (is this the metrics.jsonl of rpt train?)',
            )
        by_step[step] = StepPoint(
            step,
            _number(record, "reward_mean", source, lineno),
            _number(record, "zero_variance_share_before", source, lineno),
            _number(record, "no_prediction_share", source, lineno),
        )
    if not by_step:
        raise InputError(source, None, "no steps logged yet")
    folder = path.parent if path.name == METRICS_FILE else path
    return Curve(name or folder.name or str(folder), path, [by_step[s] for s in sorted(by_step)])


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the `window` - 1 before it (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def summary(curve: Curve, window: int) -> dict:
    """One JSON record per run: the per-step rewards and the mean of the first and last `window`
    steps, the plain answer to "did the reward rise?"."""
    rewards = curve.rewards()
    values = [r for _, r in rewards]
    w = max(1, min(window, len(values) // 2 or 1))
    start = sum(values[:w]) / w if values else None
    end = sum(values[-w:]) / w if values else None
    return {
        "run": curve.name,
        "metrics": str(curve.metrics),
        "steps": len(curve.points),
        "window": w,
        "reward_start": start,
        "reward_end": end,
        "reward_change": end - start if values else None,
        "reward": [[step, value] for step, value in rewards],
    }


def table_rows(curve: Curve, window: int, max_rows: int = 25) -> list[tuple[str, ...]]:
    """Rows for people: every step of a short run, evenly spaced steps (first and last included)
    of a long one."""
    points = curve.points
    rewards = curve.rewards()
    smooth = dict(zip([s for s, _ in rewards], running_mean([r for _, r in rewards], window)))
    if len(points) > max_rows:
        keep = {round(i * (len(points) - 1) / (max_rows - 1)) for i in range(max_rows)}
        points = [p for i, p in enumerate(points) if i in keep]

    def pct(value):
        return "-" if value is None else f"{value:.0%}"

    return [
        (
            str(p.step),
            "-" if p.reward is None else f"{p.reward:.3f}",
            "-" if p.step not in smooth else f"{smooth[p.step]:.3f}",
            pct(p.zero_variance),
            pct(p.no_prediction),
        )
        for p in points
    ]


def plot_curves(curves: Sequence[Curve], path: str, *, window: int, title: str | None = None) -> None:
    """Mean reward against step: each step's mean as dots, the running mean as a line; written
    atomically (no partial file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rpt_cli.scaling import check_plot_path, save_png

    check_plot_path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    try:
        top = 1.0
        for index, curve in enumerate(curves):
            rewards = curve.rewards()
            steps = [s for s, _ in rewards]
            values = [r for _, r in rewards]
            color = f"C{index % 10}"
            ax.plot(steps, values, "o", color=color, alpha=0.35, markersize=4)
            ax.plot(
                steps,
                running_mean(values, window),
                "-",
                color=color,
                linewidth=2,
                label=f"{curve.name} (running mean of {window})" if window > 1 else curve.name,
            )
            top = max([top, *values])
        ax.set_xlabel("Training step")
        ax.set_ylabel("Mean reward of the step's completions")
        ax.set_ylim(0, top * 1.05)
        ax.set_title(title or "Reward per training step", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
        fig.tight_layout()
        save_png(fig, path)
    finally:
        plt.close(fig)


__all__ = ["Curve", "StepPoint", "metrics_path", "plot_curves", "read_curve", "running_mean", "summary", "table_rows"]
