"""Progress on standard error: plain lines at a steady pace in a log, a bar with an ETA on a
terminal, and RPT_PROGRESS to set the pace or turn it off (rpt_cli/console.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_durations_read_as_in_a_log():
    from rpt_cli.console import duration

    assert [duration(s) for s in (0, 44.6, 60, 725, 3600 + 7 * 60 + 20)] == ["0s", "45s", "1m00s", "12m05s", "1h07m"]


def test_progress_lines_carry_the_share_done_and_an_eta_from_the_rate_since_the_first_count():
    from rpt_cli.console import ProgressLines

    now = [1000.0]
    lines = ProgressLines("work: starting", 3600, clock=lambda: now[0])
    try:
        now[0] += 90  # before any count (a model loading): the start text, with the time taken
        assert lines.line() == "work: starting [elapsed 1m30s]"
        lines.show("work: 10 items", 10, 100)
        now[0] += 10
        lines.show("work: 40 items", 40, 100)
        # 30 items in 10 s since the first count: the 60 left take 20 s
        assert lines.line() == "work: 40 items [40%, ETA 20s, elapsed 1m40s]"
        lines.show("work: next stage")  # no total: no share, no ETA
        assert lines.line() == "work: next stage [elapsed 1m40s]"
    finally:
        lines.close()


def test_progress_lines_come_at_the_interval_from_a_thread_and_stop_on_close():
    from rpt_cli.console import ProgressLines

    written: list[str] = []
    lines = ProgressLines("work: starting", 0.02, write=written.append)
    time.sleep(0.5)  # the main thread does nothing meanwhile: the lines come from the thread
    lines.close()
    assert len(written) >= 3 and all(line.startswith("work: starting [elapsed ") for line in written), written
    count = len(written)
    time.sleep(0.1)
    assert len(written) == count, "lines after close"


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_bad_interval_is_a_usage_error(monkeypatch, value):
    from rpt_cli.console import progress_interval
    from rpt_cli.errors import UsageError

    monkeypatch.setenv("RPT_PROGRESS", value)
    with pytest.raises(UsageError, match="RPT_PROGRESS"):
        progress_interval()


def test_on_a_terminal_a_bar_with_the_share_and_time_left_where_the_total_is_known(monkeypatch):
    from rich.console import Console

    from rpt_cli import console

    screen = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.delenv("RPT_PROGRESS", raising=False)
    with console.spinner("work: starting") as show:
        show("work: counting")
        time.sleep(0.15)
        unknown = screen.getvalue()
        show("work: 25 items", 25, 100)
        time.sleep(0.3)  # rich redraws ten times a second
        known = screen.getvalue()[len(unknown) :]
    assert "work: counting" in unknown and "%" not in unknown and "━" not in unknown
    assert "work: 25 items" in known and "25%" in known and "━" in known
    assert re.search(r"\d:\d\d:\d\d|-:--:--", known), known  # the time remaining column


def test_on_a_terminal_rpt_progress_0_shows_nothing(monkeypatch):
    from rich.console import Console

    from rpt_cli import console

    screen = io.StringIO()
    monkeypatch.setattr(console, "stderr", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setenv("RPT_PROGRESS", "0")
    with console.spinner("work: starting") as show:
        show("work: 25 items", 25, 100)
        time.sleep(0.15)
    assert screen.getvalue() == ""


def _documents(path: Path, count: int) -> Path:
    text = "Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Then $x = 2$ or $x = 3$. " * 3
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i in range(count)))
    return path


def _rpt(args: list[str], log: Path, progress: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RPT_PROGRESS": progress}
    with log.open("w") as err:  # standard error to a file, as in a batch job's log
        return subprocess.run([sys.executable, "-m", "rpt_cli", *args], stderr=err, env=env, timeout=600)


@pytest.mark.slow  # a real subprocess: seconds on 2 cores
def test_entropy_with_standard_error_to_a_file_writes_progress_lines_while_it_runs(tiny_model_dir, tmp_path):
    corpus = _documents(
        tmp_path / "big.jsonl", 1500
    )  # enough work to outlast several progress intervals on an idle machine
    args = ["entropy", str(corpus), "--model", str(tiny_model_dir), "--batch-tokens", "256", "-o"]
    done = _rpt([*args, str(tmp_path / "scored.jsonl")], tmp_path / "log", "0.05")
    log = (tmp_path / "log").read_text()
    assert done.returncode == 0, log
    counted = re.findall(
        r"^entropy: [\d,]+ documents, [\d,]+ tokens, [\d,]+ tokens/s \[(\d+)%, (?:ETA \S+, )?elapsed \S+\]$",
        log,
        re.MULTILINE,
    )
    assert len(counted) >= 2, log
    shares = [int(share) for share in counted]
    assert shares == sorted(shares) and shares[-1] <= 100
    assert any("ETA" in line for line in log.splitlines() if line.startswith("entropy: ") and "%" in line)
    assert re.search(r"^entropy: 1,500 documents, [\d,]+ tokens in ", log, re.MULTILINE), log  # the final summary

    quiet = _rpt([*args, str(tmp_path / "again.jsonl")], tmp_path / "quiet", "0")
    quiet_log = (tmp_path / "quiet").read_text()
    assert quiet.returncode == 0, quiet_log
    assert "[" not in quiet_log and "elapsed" not in quiet_log, quiet_log
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "scored.jsonl").read_bytes()


def _progress_lines(stderr: str, command: str) -> list[int]:
    """The share done of each progress line of `command` in a log."""
    pattern = rf"^{command}: .* \[(\d+)%, (?:ETA \S+, )?elapsed \S+\]$"
    return [int(share) for share in re.findall(pattern, stderr, re.MULTILINE)]


def test_filter_and_reward_on_big_input_write_progress_lines_to_a_log(tmp_path, monkeypatch):
    """In this process through CliRunner, whose standard error is not a terminal; a tiny interval
    stands for the 30 s of a long run."""
    from typer.testing import CliRunner

    from rpt_cli.cli import app
    from tests.test_filter import scored
    from tests.test_reward_cli import ROLLOUT, jsonl

    monkeypatch.setenv("RPT_PROGRESS", "0.001")
    doc = scored("so $x = 3$. Hence", [2, 4, 6, 8, 12], [0.1, 1.5, 2.5, 0.2, 3.0, 0.9])
    scored_path = tmp_path / "scored.jsonl"
    scored_path.write_text(jsonl(*({**doc, "id": i} for i in range(4000))))
    result = CliRunner().invoke(app, ["filter", str(scored_path), "--min", "0.5", "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 0, result.output
    shares = _progress_lines(result.stderr, "filter")
    assert shares and shares == sorted(shares) and shares[-1] <= 100, result.stderr
    assert re.search(r"^filter: 4,000 documents, ", result.stderr, re.MULTILINE)

    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text(jsonl(*({**ROLLOUT, "id": str(i)} for i in range(3000))))
    result = CliRunner().invoke(app, ["reward", str(rollouts), "-o", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    shares = _progress_lines(result.stderr, "reward")
    assert shares and shares == sorted(shares), result.stderr
    assert "reward (prefix, boxed answers): 3,000 records" in result.stderr


def test_a_short_run_at_the_default_pace_prints_no_progress_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rpt_cli.cli import app
    from tests.test_reward_cli import ROLLOUT, jsonl

    monkeypatch.delenv("RPT_PROGRESS", raising=False)
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text(jsonl(*({**ROLLOUT, "id": str(i)} for i in range(300))))
    result = CliRunner().invoke(app, ["reward", str(rollouts), "-o", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # the summary only


def test_a_bad_rpt_progress_stops_the_command_with_status_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rpt_cli.cli import app
    from tests.test_reward_cli import ROLLOUT, jsonl

    monkeypatch.setenv("RPT_PROGRESS", "soon")
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text(jsonl(ROLLOUT))
    result = CliRunner().invoke(app, ["reward", str(rollouts), "-o", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2
    expected = "error: RPT_PROGRESS=soon: expected seconds between progress lines (0 turns them off)"
    assert result.stderr.strip() == expected
    assert not (tmp_path / "r.jsonl").exists()
