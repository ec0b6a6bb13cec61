"""`rpt scaling`: the power-law fit recovers known parameters, refuses degenerate input with one
line and exit 2, reads compute from reports or a run's metrics.jsonl, evaluates a run folder's
checkpoints itself (tiny real models whose accuracies the samples control), and draws the plot."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.scaling import FitError, fit_power_law
from tests.test_eval import (
    build_run_folder,
    corpus_samples,
    read_jsonl,
    reference_next_tokens,
    reference_text,
    write_jsonl,
)

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Figure 5's shape: accuracy rising towards P* as compute grows from about 1e20 to 1e21 FLOPs
TRUTH = {
    "easy": (-0.30 * 1e20**0.35, 0.35, 0.48),
    "medium": (-0.25 * 1e20**0.5, 0.5, 0.36),
    "hard": (-0.2 * 1e20**0.6, 0.6, 0.26),
}
COMPUTE = [1e20, 2e20, 4e20, 8e20, 1e21, 1.2e21]


def law(compute, A, alpha, p_star):
    return A / np.asarray(compute) ** alpha + p_star


def synthetic_reports(compute=COMPUTE, *, noise: float = 0.0, mode: str = "ntp", with_flops: bool = True) -> list[dict]:
    rng = np.random.default_rng(0)
    reports = []
    for step, c in enumerate(compute, start=1):
        splits = {
            name: {
                "n": 200,
                "accuracy": float(law(c, *params) + rng.normal(0, noise) if noise else law(c, *params)),
                "ci95": [0.0, 1.0],
            }
            for name, params in TRUTH.items()
        }
        report = {"model": f"run/checkpoint-{step * 100}", "mode": mode, "n": 200, "splits": splits, "step": step * 100}
        if with_flops:
            report["flops"] = c
        reports.append(report)
    return reports


# -- the fit -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TRUTH))
def test_fit_recovers_the_parameters_of_exact_data(name):
    A, alpha, p_star = TRUTH[name]
    fit = fit_power_law(COMPUTE, list(law(COMPUTE, A, alpha, p_star)))
    assert fit.A == pytest.approx(A, rel=1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-6)
    assert fit.p_star == pytest.approx(p_star, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.points == 6 and fit.at_bound == ()
    assert fit.predict([3e20])[0] == pytest.approx(law(3e20, A, alpha, p_star), abs=1e-9)


def test_fit_recovers_the_parameters_of_noisy_data_within_a_few_percent():
    """Ten checkpoints over three decades, accuracy noise of 0.02 points (σ): A, α and P* within
    5 %, and decreasing curves (A > 0, like a loss) too."""
    compute = list(np.geomspace(1e18, 1e21, 10))
    rng = np.random.default_rng(1)
    for A, alpha, p_star in [(-0.3 * 1e18**0.3, 0.3, 0.5), (0.4 * 1e18**0.45, 0.45, 0.1)]:
        y = law(compute, A, alpha, p_star) + rng.normal(0, 2e-4, len(compute))
        fit = fit_power_law(compute, list(y))
        assert fit.A == pytest.approx(A, rel=0.05)
        assert fit.alpha == pytest.approx(alpha, rel=0.05)
        assert fit.p_star == pytest.approx(p_star, rel=0.05)
        assert fit.r2 > 0.999


@pytest.mark.parametrize(
    "compute, accuracy, reason",
    [
        ([1e20, 2e20], [0.1, 0.2], "need at least three points"),
        ([1e20, 0.0, 4e20], [0.1, 0.2, 0.3], "compute must be positive"),
        ([1e20, -2e20, 4e20], [0.1, 0.2, 0.3], "compute must be positive"),
        ([1e20, 1e20, 4e20], [0.1, 0.2, 0.3], "need at least three distinct compute values"),
        ([1e20, 2e20, 4e20], [0.2, 0.2, 0.2], "accuracy is 0.2 at every point"),
        ([1e20, 2e20, math.inf], [0.1, 0.2, 0.3], "compute must be positive and finite"),
        ([1e20, 2e20, 4e20], [0.1, float("nan"), 0.3], "accuracy must be a finite number"),
    ],
)
def test_fit_rejects_degenerate_input(compute, accuracy, reason):
    with pytest.raises(FitError, match=reason):
        fit_power_law(compute, accuracy)


# -- the command from reports --------------------------------------------------------------------------
def test_scaling_from_reports_prints_fits_and_draws_the_plot(tmp_path):
    reports = write_jsonl(tmp_path / "reports.jsonl", synthetic_reports())
    plot = tmp_path / "scaling.png"
    result = runner.invoke(app, ["scaling", str(reports), "-o", str(plot), "--title", "test run"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert out["mode"] == "ntp" and out["plot"] == str(plot) and len(out["points"]) == 6
    assert [p["compute"] for p in out["points"]] == COMPUTE
    for name, (A, alpha, p_star) in TRUTH.items():
        fit = out["fits"][name]
        assert fit["A"] == pytest.approx(A, rel=1e-5) and fit["alpha"] == pytest.approx(alpha, rel=1e-5)
        assert fit["p_star"] == pytest.approx(p_star, rel=1e-5) and fit["r2"] == pytest.approx(1.0)
    for column in ("A", "α", "P*", "R²", "easy", "medium", "hard"):
        assert column in result.stderr
    data = plot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(str(plot)).shape
    assert (width, height) == (960, 660)
    assert not list(tmp_path.glob(".scaling.png.*"))  # no temporary file left behind


def test_scaling_reads_compute_from_metrics_by_step(tmp_path):
    reports = write_jsonl(tmp_path / "reports.jsonl", synthetic_reports(with_flops=False))
    result = runner.invoke(app, ["scaling", str(reports)])
    assert result.exit_code == 2
    assert result.stderr == (
        f'error: {reports}:1: no training compute: the report has no "flops" (evaluate '
        "checkpoints of an rpt train run, or pass --metrics RUN/metrics.jsonl)\n"
    )
    metrics = write_jsonl(
        tmp_path / "metrics.jsonl",
        [{"step": s, "flops": c} for s, c in zip(range(100, 700, 100), COMPUTE)] + [{"step": 700, "flops": 9e21}],
    )
    result = runner.invoke(app, ["scaling", str(reports), "--metrics", str(metrics), "--split", "hard"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert list(out["fits"]) == ["hard"] and out["plot"] is None
    assert out["fits"]["hard"]["alpha"] == pytest.approx(TRUTH["hard"][1], rel=1e-5)
    # a step the metrics do not hold
    short = write_jsonl(tmp_path / "short.jsonl", [{"step": 100, "flops": 1e20}])
    result = runner.invoke(app, ["scaling", str(reports), "--metrics", str(short)])
    assert result.exit_code == 2 and result.stderr == f"error: {reports}:2: step 200 has no compute in {short}\n"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda rs: rs[:2], "error: split easy: need at least three points to fit A, α and P*, got 2\n"),
        (
            lambda rs: [{**rs[0], "flops": 0}] + rs[1:],
            "error: {path}:1: training compute must be positive, got 0 "
            "(the model before training has none: leave it out)\n",
        ),
        (
            lambda rs: [{**r, "splits": {**r["splits"], "hard": {"n": 9, "accuracy": 0.0}}} for r in rs],
            "error: split hard: accuracy is 0 at every point, so there is no curve to fit\n",
        ),
        (
            lambda rs: rs + [{**rs[0], "mode": "reasoning"}],
            "error: {path}: the reports hold modes ntp and reasoning; choose one with --mode\n",
        ),
        (lambda rs: [{"model": "x"}], 'error: {path}:1: missing field "splits" (is this a report of rpt eval?)\n'),
    ],
)
def test_scaling_rejects_degenerate_reports_with_one_line(change, message, tmp_path):
    path = write_jsonl(tmp_path / "reports.jsonl", change(synthetic_reports()))
    plot = tmp_path / "plot.png"
    result = runner.invoke(app, ["scaling", str(path), "-o", str(plot)])
    assert result.exit_code == 2
    assert result.stderr == message.format(path=path)
    assert result.stdout == "" and not plot.exists()


def test_scaling_picks_one_mode_and_checks_options(tmp_path):
    path = write_jsonl(
        tmp_path / "reports.jsonl", synthetic_reports() + synthetic_reports(mode="reasoning", noise=0.01)
    )
    result = runner.invoke(app, ["scaling", str(path), "--mode", "reasoning"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["mode"] == "reasoning"
    bad = runner.invoke(app, ["scaling", str(path), "--mode", "think"])
    assert bad.exit_code == 2 and bad.stderr == "error: --mode think: choose ntp or reasoning\n"
    nowhere = runner.invoke(app, ["scaling", str(path), "--mode", "ntp", "-o", str(tmp_path / "no" / "plot.png")])
    assert (
        nowhere.exit_code == 2
        and nowhere.stderr == f"error: -o {tmp_path}/no/plot.png: folder {tmp_path}/no does not exist\n"
    )


def test_scaling_refuses_reports_of_both_answer_formats(tmp_path):
    boxed = synthetic_reports(mode="reasoning")
    direct = [{**r, "answer": "direct"} for r in synthetic_reports(mode="reasoning", noise=0.01)]
    path = write_jsonl(tmp_path / "reports.jsonl", boxed + direct)
    result = runner.invoke(app, ["scaling", str(path), "--mode", "reasoning"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {path}: the reasoning reports hold both answer formats (boxed and direct); "
        "fit each format's reports on their own\n"
    )
    alone = write_jsonl(tmp_path / "direct.jsonl", direct)
    assert runner.invoke(app, ["scaling", str(alone)]).exit_code == 0


# -- evaluating a run's checkpoints -------------------------------------------------------------------
def perturbed_model(source, folder, seed: int, scale: float = 0.3):
    """The tiny model with seeded noise on its weights: a random model with tied embeddings
    mostly predicts a copy of its last input token, whatever its seed, so checkpoints that are
    to disagree need weights pushed well away from that."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.add_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(folder)
    for item in source.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, folder / item.name)
    return folder


@pytest.fixture(scope="module")
def controlled_run(tiny_model_dir, tmp_path_factory):
    """A run of four checkpoints (the tiny model with different seeded noise) and samples whose
    targets are chosen from the checkpoints' own brute-force predictions, so that later
    checkpoints get more of them right."""
    from rpt_cli.models import load_model

    root = tmp_path_factory.mktemp("scaling-run")
    steps = {10: 0, 20: 1, 40: 2, 80: 3}
    folders = {step: perturbed_model(tiny_model_dir, root / f"model-{step}", seed) for step, seed in steps.items()}
    base = corpus_samples(load_model(str(tiny_model_dir))[1], per_doc=4, docs=12)
    predictions = {}
    for step, folder in folders.items():
        model, tokenizer, _ = load_model(str(folder))
        predictions[step] = [
            reference_text(tokenizer, token)
            for token, _ in reference_next_tokens(model, tokenizer, [s["context"] for s in base], 4096)
        ]
    wanted = {10: 1, 20: 4, 40: 6, 80: 8}  # samples whose target is that checkpoint's guess
    samples, owner = [], iter([step for step, count in wanted.items() for _ in range(count)])
    pending = next(owner)
    for k, sample in enumerate(base):
        guess = predictions[pending][k] if pending is not None else None
        if pending is not None and guess:
            sample = {**sample, "target": guess + "~end", "boundaries": [len(guess.encode()), len(guess.encode()) + 4]}
            pending = next(owner, None)
        else:
            sample = {**sample, "target": "\u2603 unguessable", "boundaries": [3]}
        samples.append({**sample, "entropy": 1.7})
    assert pending is None, "not enough contexts with a printable guess"
    samples_path = write_jsonl(root / "samples.jsonl", samples)
    run = build_run_folder(root / "run", folders, samples=str(samples_path), flops_per_step=3e12)
    expected = {
        step: sum(
            bool(p) and s["target"].startswith(p) and len(p.encode()) in s["boundaries"]
            for p, s in zip(predictions[step], samples)
        )
        / len(samples)
        for step in steps
    }
    assert len(set(expected.values())) == 4
    return run, samples_path, expected


@pytest.mark.slow  # controlled_run builds and brute-forces four checkpoints: ~20 s on 2 cores
def test_scaling_evaluates_the_checkpoints_of_a_run_folder(controlled_run, tmp_path):
    run, samples_path, expected = controlled_run
    plot, reports = tmp_path / "scaling.png", tmp_path / "reports.jsonl"
    result = runner.invoke(app, ["scaling", str(run), "-o", str(plot), "--reports", str(reports), "--split", "easy"])
    assert result.exit_code == 0, result.output
    assert f"evaluating on the run's training samples {samples_path}" in result.stderr
    out = orjson.loads(result.stdout)
    assert [p["step"] for p in out["points"]] == [10, 20, 40, 80]
    assert [p["compute"] for p in out["points"]] == [3e12 * s for s in (10, 20, 40, 80)]
    assert [p["accuracy"]["easy"] for p in out["points"]] == pytest.approx([expected[s] for s in (10, 20, 40, 80)])
    fit = out["fits"]["easy"]
    assert fit["points"] == 4 and 0 <= fit["p_star"] <= 1 and fit["r2"] > 0.5
    assert plot.read_bytes().startswith(PNG_MAGIC)
    # the saved reports give the same fit without evaluating again
    saved = read_jsonl(reports.read_bytes())
    assert [r["model"] for r in saved] == [
        "run/checkpoint-10",
        "run/checkpoint-20",
        "run/checkpoint-40",
        "run/checkpoint-80",
    ]
    again = runner.invoke(app, ["scaling", str(reports), "--split", "easy"])
    assert orjson.loads(again.stdout)["fits"] == out["fits"]


@pytest.mark.slow  # controlled_run builds and brute-forces four checkpoints: ~20 s on 2 cores
def test_eval_pipes_into_scaling(controlled_run):
    run, samples_path, expected = controlled_run
    evaluated = runner.invoke(
        app,
        [
            "eval",
            str(samples_path),
            *[arg for step in (10, 20, 40, 80) for arg in ("-m", str(run / f"checkpoint-{step}"))],
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    fitted = runner.invoke(app, ["scaling", "--split", "hard"], input=evaluated.stdout)
    assert fitted.exit_code == 0, fitted.output
    out = orjson.loads(fitted.stdout)
    assert [p["accuracy"]["hard"] for p in out["points"]] == pytest.approx([expected[s] for s in (10, 20, 40, 80)])


def test_a_run_without_checkpoints_or_samples_is_refused(tmp_path, tiny_model_dir):
    run = build_run_folder(tmp_path / "run", {5: tiny_model_dir}, samples=str(tmp_path / "gone.jsonl"))
    result = runner.invoke(app, ["scaling", str(run)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {run}: give --samples FILE (the run's own samples file '{tmp_path / 'gone.jsonl'}' is not there)\n"
    )
