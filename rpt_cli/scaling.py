"""`rpt scaling`: next-token accuracy against training compute, fitted by the paper's Eq. 5,

    P(C) = A / C^α + P*

per entropy split (Figure 5), by bounded non-linear least squares.

Points come from evaluation reports of `rpt eval` (one per checkpoint; the report's `flops`, or the
run's metrics.jsonl looked up by the report's `step`) or from evaluating every checkpoint of an
`rpt train` run folder here.

The fit works in log compute, centred: with u = ln C − mean(ln C), the model is
P = B·e^(−α·u) + P*, where B = A·e^(−α·mean(ln C)). Compute spans 10^15–10^22 FLOPs, so A itself
can be astronomically large or small while B is of the order of the accuracies, which keeps the
problem well conditioned. Bounds: 0 < α ≤ 5 and 0 ≤ P* ≤ 1 (an accuracy); B is free (negative
when accuracy rises with compute). The start comes from a grid over α, solving the linear
problem in (B, P*) for each, then trust-region least squares (scipy) refines all three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rpt_cli.errors import InputError, UsageError
from rpt_cli.filter import SPLIT_NAMES
from rpt_cli.records import is_number

ALPHA_BOUNDS = (1e-4, 5.0)
P_STAR_BOUNDS = (0.0, 1.0)
SPLIT_COLORS = {"easy": "#2a9d8f", "medium": "#e9a23b", "hard": "#d1495b"}


class FitError(ValueError):
    """The data cannot be fitted (too few points, non-positive compute, no variation, no convergence)."""


@dataclass(frozen=True)
class PowerLawFit:
    """P(C) = A / C^alpha + p_star, with R² on the fitted points."""

    A: float
    alpha: float
    p_star: float
    r2: float
    points: int
    at_bound: tuple[str, ...] = ()
    # the centred form the fit ran in: P = b·exp(−alpha·(ln C − log_centre)) + p_star
    b: float = 0.0
    log_centre: float = 0.0

    def predict(self, compute):
        import numpy as np

        u = np.log(np.asarray(compute, dtype=float)) - self.log_centre
        return self.b * np.exp(-self.alpha * u) + self.p_star

    def as_dict(self) -> dict:
        return {
            "A": self.A,
            "alpha": self.alpha,
            "p_star": self.p_star,
            "r2": self.r2,
            "points": self.points,
            "at_bound": list(self.at_bound),
        }


def check_points(compute: Sequence[float], accuracy: Sequence[float]) -> None:
    if len(compute) != len(accuracy):
        raise FitError(f"{len(compute)} compute values but {len(accuracy)} accuracies")
    if len(compute) < 3:
        raise FitError(f"need at least three points to fit A, α and P*, got {len(compute)}")
    for c in compute:
        if not (isinstance(c, (int, float)) and math.isfinite(c)) or c <= 0:
            raise FitError(f"compute must be positive and finite, got {c!r}")
    if len(set(compute)) < 3:
        raise FitError(f"need at least three distinct compute values, got {len(set(compute))}")
    for a in accuracy:
        if not (isinstance(a, (int, float)) and math.isfinite(a)):
            raise FitError(f"accuracy must be a finite number, got {a!r}")
    if max(accuracy) == min(accuracy):
        raise FitError(f"accuracy is {accuracy[0]:g} at every point, so there is no curve to fit")


def fit_power_law(compute: Sequence[float], accuracy: Sequence[float]) -> PowerLawFit:
    """Fit P(C) = A / C^α + P* to the points (bounded least squares); raises FitError."""
    import numpy as np
    from scipy.optimize import least_squares

    compute = [float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else c for c in compute]
    accuracy = [float(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in accuracy]
    check_points(compute, accuracy)
    y = np.asarray(accuracy)
    log_c = np.log(np.asarray(compute))
    centre = float(log_c.mean())
    u = log_c - centre
    lo = np.array([-np.inf, ALPHA_BOUNDS[0], P_STAR_BOUNDS[0]])
    hi = np.array([np.inf, ALPHA_BOUNDS[1], P_STAR_BOUNDS[1]])

    def residuals(theta):
        b, alpha, p_star = theta
        return b * np.exp(-alpha * u) + p_star - y

    start, best = None, np.inf
    for alpha in np.geomspace(1e-3, ALPHA_BOUNDS[1], 80):
        e = np.exp(-alpha * u)
        (b, p_star), *_ = np.linalg.lstsq(np.column_stack([e, np.ones_like(e)]), y, rcond=None)
        if not P_STAR_BOUNDS[0] <= p_star <= P_STAR_BOUNDS[1]:  # the linear optimum is out of bounds: pin P*
            p_star = min(max(p_star, P_STAR_BOUNDS[0]), P_STAR_BOUNDS[1])
            b = float(np.dot(y - p_star, e) / np.dot(e, e))
        sse = float(np.sum(residuals((b, alpha, p_star)) ** 2))
        if np.isfinite(sse) and sse < best:
            start, best = np.array([b, alpha, p_star]), sse
    if start is None:
        raise FitError("no starting point gives a finite error")
    try:
        result = least_squares(
            residuals,
            start,
            bounds=(lo, hi),
            method="trf",
            x_scale="jac",
            xtol=1e-14,
            ftol=1e-14,
            gtol=1e-14,
            max_nfev=20000,
        )
    except (ValueError, FloatingPointError) as exc:
        raise FitError(f"the least-squares fit failed ({exc})") from None
    if not result.success or not np.all(np.isfinite(result.x)):
        raise FitError(f"the least-squares fit did not converge ({result.message})")
    b, alpha, p_star = (float(v) for v in result.x)
    with np.errstate(over="ignore"):
        A = float(b * np.exp(alpha * centre))
    if not math.isfinite(A):
        raise FitError(f"A overflows (α = {alpha:.3g} at compute around e^{centre:.0f})")
    sse = float(np.sum(result.fun**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - sse / sst
    names = ("b", "alpha", "p_star")
    at_bound = tuple(
        name
        for name, value, low, high in zip(names, result.x, lo, hi)
        if name != "b"
        and (abs(value - low) <= 1e-6 * max(1.0, abs(low)) or abs(value - high) <= 1e-6 * max(1.0, abs(high)))
    )
    return PowerLawFit(A=A, alpha=alpha, p_star=p_star, r2=r2, points=len(y), at_bound=at_bound, b=b, log_centre=centre)


# --------------------------------------------------------------------------------------------
# Points from evaluation reports
# --------------------------------------------------------------------------------------------


@dataclass
class ScalingPoint:
    compute: float
    model: str
    step: int | None
    accuracy: dict[str, float] = field(default_factory=dict)  # split -> accuracy (empty splits left out)

    def as_dict(self) -> dict:
        return {"model": self.model, "step": self.step, "compute": self.compute, "accuracy": self.accuracy}


def points_from_reports(
    numbered: Iterable[tuple[int, dict]],
    source: str,
    *,
    mode: str | None = None,
    flops_by_step: dict[int, float] | None = None,
    metrics_name: str = "metrics.jsonl",
) -> tuple[str, str | None, list[ScalingPoint]]:
    """(mode, answer format, points) from (line number, report) pairs: each report's compute is its
    `flops`, or with `flops_by_step` the compute logged at its `step`. Reports of another mode than
    `mode` are left out; without `mode`, all reports must share one. Reasoning reports must share
    one answer format (None for ntp)."""
    # gain reports measure information gain, not accuracy against compute: never fitted
    kept: list[tuple[int, dict]] = [
        (lineno, r) for lineno, r in numbered if r["mode"] != "gain" and (mode is None or r["mode"] == mode)
    ]
    modes = sorted({r["mode"] for _, r in kept})
    if len(modes) > 1:
        raise UsageError(f"{source}: the reports hold modes {' and '.join(modes)}; choose one with --mode")
    if not kept:
        raise UsageError(f"{source}: no evaluation reports{f' of mode {mode}' if mode else ''} to fit")
    answers = sorted({str(r.get("answer") or "boxed") for _, r in kept if r["mode"] == "reasoning"})
    if len(answers) > 1:
        raise UsageError(
            f"{source}: the reasoning reports hold both answer formats ({' and '.join(answers)}); "
            "fit each format's reports on their own"
        )
    points = []
    for lineno, report in kept:
        if flops_by_step is not None:
            step = report.get("step")
            if type(step) is not int:
                raise InputError(
                    source, lineno, 'no "step" to look up in --metrics (is the model a checkpoint of rpt train?)'
                )
            if step not in flops_by_step:
                raise InputError(source, lineno, f"step {step} has no compute in {metrics_name}")
            compute = flops_by_step[step]
        else:
            compute = report.get("flops")
            if compute is None:
                raise InputError(
                    source,
                    lineno,
                    'no training compute: the report has no "flops" (evaluate checkpoints '
                    "of an rpt train run, or pass --metrics RUN/metrics.jsonl)",
                )
        if not is_number(compute) or not math.isfinite(compute) or compute <= 0:
            raise InputError(
                source,
                lineno,
                f"training compute must be positive, got {compute!r} "
                "(the model before training has none: leave it out)",
            )
        accuracy = {
            name: float(entry["accuracy"])
            for name, entry in report["splits"].items()
            if entry.get("accuracy") is not None
        }
        points.append(ScalingPoint(float(compute), str(report.get("model")), report.get("step"), accuracy))
    return modes[0], (answers[0] if answers else None), sorted(points, key=lambda p: p.compute)


def fit_splits(points: Sequence[ScalingPoint], splits: Sequence[str]) -> dict[str, PowerLawFit]:
    """One fit per split; a split that cannot be fitted is a usage error naming it."""
    fits = {}
    for name in splits:
        have = [p for p in points if name in p.accuracy]
        try:
            fits[name] = fit_power_law([p.compute for p in have], [p.accuracy[name] for p in have])
        except FitError as exc:
            raise UsageError(f"split {name}: {exc}") from None
    return fits


def splits_to_fit(points: Sequence[ScalingPoint], split: str) -> list[str]:
    if split != "all":
        if split not in SPLIT_NAMES:
            raise UsageError(f"--split {split}: choose one of {', '.join((*SPLIT_NAMES, 'all'))}")
        return [split]
    present = [name for name in SPLIT_NAMES if any(name in p.accuracy for p in points)]
    if not present:
        raise UsageError("the reports hold no split with an accuracy")
    return present


# --------------------------------------------------------------------------------------------
# Evaluating the checkpoints of a run folder
# --------------------------------------------------------------------------------------------


def run_samples_path(run: Path, samples: str | None) -> tuple[str, bool]:
    """(samples file, whether it is the run's own training file): `samples` when given, else the
    file the run was trained on (its config.yaml)."""
    from rpt_cli.evaluate import RUN_CONFIG, read_run_settings

    if not (run / RUN_CONFIG).is_file():
        raise UsageError(f"{run}: not a run folder of rpt train (no {RUN_CONFIG})")
    if samples is not None:
        return samples, False
    own = read_run_settings(run).get("samples")
    if not own or not Path(own).is_file():
        raise UsageError(f"{run}: give --samples FILE (the run's own samples file {own!r} is not there)")
    return own, True


def evaluate_run(run: Path, samples, config, *, source: str | None = None, progress=None) -> list[dict]:
    """Reports of every complete checkpoint of a run (and of its final model where no checkpoint
    holds its step), in step order, all on the same samples (`evaluate.EvalSample`s)."""
    from rpt_cli.evaluate import evaluate_model, locate_model, run_models

    models = run_models(run)
    if not models:
        raise UsageError(f"{run}: the run holds no complete checkpoint yet")
    reports: list[dict] = []
    for _, folder in models:
        reports += evaluate_model(locate_model(str(folder)), samples, config, source=source, progress=progress)
    return reports


# --------------------------------------------------------------------------------------------
# The plot (Figure 5): points, fitted curves, log compute axis
# --------------------------------------------------------------------------------------------


def check_plot_path(path: str) -> None:
    """Refuse a plot path that cannot be written, before any work (outputs.py)."""
    from rpt_cli.files import plan_output

    if path == "-":
        raise UsageError("-o -: the plot is a PNG file; give a file name (the numbers go to standard output)")
    plan_output(path, "-o")


def plot_scaling(
    points: Sequence[ScalingPoint],
    fits: dict[str, PowerLawFit],
    path: str,
    *,
    mode: str,
    answer: str | None = None,
    title: str | None = None,
) -> None:
    """A PNG in the style of the paper's Figure 5, written atomically (no partial file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    check_plot_path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    try:
        for name, fit in fits.items():
            have = [p for p in points if name in p.accuracy]
            xs = np.array([p.compute for p in have])
            color = SPLIT_COLORS.get(name)
            ax.scatter(
                xs,
                [100 * p.accuracy[name] for p in have],
                color=color,
                s=36,
                zorder=3,
                edgecolors="white",
                linewidths=0.8,
            )
            grid = np.geomspace(xs.min() / 1.2, xs.max() * 1.2, 200)
            ax.plot(
                grid,
                100 * fit.predict(grid),
                color=color,
                linewidth=2,
                label=f"{name.capitalize()} (R² = {fit.r2:.3f})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("Training compute (FLOPs)")
        ax.set_ylabel("Next-token prediction accuracy (%)")
        mode_name = (
            "standard next-token"
            if mode != "reasoning"
            else "sampled guesses, direct format"
            if answer == "direct"
            else "next-token reasoning"
        )
        ax.set_title(
            title or rf"Accuracy vs. training compute ({mode_name}): $P(C) = A\,/\,C^{{\alpha}} + P^*$", fontsize=10
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(frameon=False)
        fig.tight_layout()
        save_png(fig, path)
    finally:
        plt.close(fig)


def save_png(fig, path: str) -> None:
    """Write a matplotlib figure as PNG to `path` as outputs.py writes every output: atomically
    for a file (beside its place, then moved in whole), in place for a device or FIFO."""
    import io

    from rpt_cli.files import OutputStream, plan_output

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with OutputStream(plan_output(path, "-o")) as out:
        out.write(buffer.getvalue())


def scaling_result(
    mode: str, points: Sequence[ScalingPoint], fits: dict[str, PowerLawFit], plot: str | None, answer: str | None = None
) -> dict:
    """What `rpt scaling` writes to standard output."""
    return {
        "mode": mode,
        "answer": answer,
        "law": "P(C) = A / C^alpha + p_star",
        "points": [p.as_dict() for p in points],
        "fits": {name: fit.as_dict() for name, fit in fits.items()},
        "plot": plot,
    }


__all__ = [
    "FitError",
    "PowerLawFit",
    "ScalingPoint",
    "check_plot_path",
    "evaluate_run",
    "fit_power_law",
    "fit_splits",
    "plot_scaling",
    "points_from_reports",
    "run_samples_path",
    "scaling_result",
    "splits_to_fit",
]
