"""`rpt curves`: per-step rewards read from a run's metrics.jsonl, the start and end means, the
table, the plot, and the one-line errors. A real `rpt train` run's log is read in test_learning.py
and by `make demo`; here the logs are written by the training stage's own `RunLog`."""

from __future__ import annotations

import io

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.curves import running_mean
from rpt_cli.training.log import RunLog

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step_metrics(step: int, reward: float) -> dict:
    return {
        "step": step,
        "reward_mean": reward,
        "reward_std": 0.1,
        "zero_variance_share_before": 0.25,
        "zero_variance_share_after": 0.25,
        "no_prediction_share": 0.0,
        "completion_length_mean": 1.0,
        "truncated_share": 1.0,
        "learning_rate": 1e-5,
        "step_time_s": 1.0,
        "tokens_per_s": 1.0,
        "sampling_rounds": 1,
        "flops": 1e9 * step,
    }


def write_run(folder, rewards: list[float]):
    folder.mkdir()
    log = RunLog(folder, len(rewards), Console(file=io.StringIO()))
    for step, reward in enumerate(rewards, start=1):
        log.write_step(step_metrics(step, reward), {"step": step, "drawn": []})
    return folder


def test_start_and_end_of_a_rising_curve_with_table_and_plot(tmp_path):
    run = write_run(tmp_path / "run", [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9, 1.0])
    plot = tmp_path / "reward.png"
    result = runner.invoke(app, ["curves", str(run), "--window", "3", "-o", str(plot)])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert (summary["run"], summary["steps"], summary["window"]) == ("run", 8, 3)
    assert summary["reward_start"] == pytest.approx(0.2) and summary["reward_end"] == pytest.approx(0.8667, abs=1e-4)
    assert summary["reward_change"] == pytest.approx(summary["reward_end"] - summary["reward_start"])
    assert summary["reward"][0] == [1, 0.1] and summary["reward"][-1] == [8, 1.0]
    assert "mean reward of the first 3 0.200, of the last 3 0.867" in result.stderr
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_metrics_file_a_torn_last_line_and_two_runs(tmp_path):
    run = write_run(tmp_path / "a", [0.0, 1.0])
    with open(run / "metrics.jsonl", "ab") as stream:
        stream.write(b'{"step": 3, "reward_me')  # a run killed while writing
    other = write_run(tmp_path / "b", [0.5, 0.5, 0.5, 0.5])
    result = runner.invoke(app, ["curves", str(run / "metrics.jsonl"), str(other)])
    assert result.exit_code == 0, result.output
    first, second = (orjson.loads(line) for line in result.stdout.splitlines())
    assert first["steps"] == 2 and first["window"] == 1 and first["reward_change"] == 1.0
    assert second["run"] == "b" and second["reward_change"] == 0.0
    assert "no plot" not in result.stderr and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "content, args, message",
    [
        (None, [], "error: {path}: no such run folder or metrics file"),
        (
            b'{"step": 1, "reward_mean": 0.5}\nnot json\n{"step": 3, "reward_mean": 0.5}\n',
            [],
            "error: {path}/metrics.jsonl:2: invalid JSON",
        ),
        (
            b'{"step": "one", "reward_mean": 0.5}\n{"step": 2}\n',
            [],
            "error: {path}/metrics.jsonl:1: \"step\" must be a positive integer, got 'one'",
        ),
        (
            b'{"step": 1, "reward_mean": "high"}\n{"step": 2}\n',
            [],
            "error: {path}/metrics.jsonl:1: \"reward_mean\" must be a number, got 'high'",
        ),
        (b"", [], "error: {path}/metrics.jsonl: no steps logged yet"),
        (b'{"step": 1, "reward_mean": 0.5}\n', ["--window", "0"], "error: --window must be at least 1"),
        (
            b'{"step": 1, "reward_mean": 0.5}\n',
            ["-o", "/no/such/folder/x.png"],
            "error: -o /no/such/folder/x.png: folder /no/such/folder does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, args, message):
    path = tmp_path / "run"
    if content is not None:
        path.mkdir()
        (path / "metrics.jsonl").write_bytes(content)
    result = runner.invoke(app, ["curves", str(path), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message.format(path=path)) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_running_mean():
    assert running_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert running_mean([1.0, 3.0], 5) == [1.0, 2.0]
