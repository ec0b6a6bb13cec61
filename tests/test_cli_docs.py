"""Every command is documented: a docs page naming each of its options, a help text with a
runnable example, and a line in the README. `rpt --help` and light commands start fast."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest
import typer

from rpt_cli.cli import app
from tests.conftest import ROOT


def commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return dict(group.commands)


@pytest.mark.parametrize("name", sorted(commands()))
def test_command_is_documented(name):
    command = commands()[name]
    page = ROOT / "docs" / f"{name}.md"
    assert page.is_file(), f"docs/{name}.md is missing"
    text = page.read_text(encoding="utf-8")
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"rpt {name} {param.opts[0]} has no help text"
            assert any(opt in text for opt in param.opts), f"docs/{name}.md does not mention {param.opts[0]}"
    assert command.epilog and f"rpt {name}" in command.epilog, f"rpt {name} --help shows no example"
    assert f"rpt {name}" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_help_and_light_commands_start_fast():
    """Heavy libraries load only in the commands that need them."""
    code = (
        "import sys; from rpt_cli import cli; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm', 'datasets', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    help_run = subprocess.run([sys.executable, "-m", "rpt_cli", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0
    for name in commands():
        assert re.search(rf"\b{name}\b", help_run.stdout)


@pytest.mark.parametrize(
    "args, old, new",
    [
        (["rollout", "-", "-n", "3"], "-n/--num-rollouts", "-G/--num-completions"),
        (["eval", "-", "--fn", "dense"], "--fn", "--reward"),
        (["reward", "-", "--batch-size", "4"], "--batch-size", "--contexts-per-pass"),
        (["entropy", "-", "--top-k", "8"], "--top-k", "--entropy-top-k"),
        (["train", "s.jsonl", "--num-generations", "4"], "--num-generations", "-G/--num-completions"),
    ],
)
def test_old_option_names_still_work_for_one_release_with_a_note(args, old, new, tmp_path, monkeypatch):
    """Hidden aliases: the old name is read (here the command then stops on its empty input), and a
    note names the new one."""
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out")], input="")
    assert f"note: {old} is now {new}; the old name goes in the next release" in result.stderr, result.output
    both = CliRunner().invoke(app, [*args[:2], *args[2:], new.split("/")[-1], "99"], input="")
    assert both.exit_code == 2 and f"is the old name of {new}: give one of them" in both.stderr, both.output


def test_train_options_and_settings_are_one_list():
    """Every rpt train option is a TrainConfig setting and every setting an option (old names aside)."""
    from dataclasses import fields

    from rpt_cli.training.config import TrainConfig

    names = {p.name for p in commands()["train"].params if not p.hidden and p.name != "help"}
    assert names - {"config", "resume"} == {f.name for f in fields(TrainConfig)}
