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
    code = ("import sys; from rpt_cli import cli; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm', 'datasets') if m in sys.modules]; "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
    help_run = subprocess.run([sys.executable, "-m", "rpt_cli", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0
    for name in commands():
        assert re.search(rf"\b{name}\b", help_run.stdout)
