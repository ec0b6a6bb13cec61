"""The `rpt` command line: one thin module per command (`rpt_cli/cli/<command>.py`), all on one
Typer app (`app.py`, with the options several commands share, their help panels, and the checks
every command makes before any work). Each command parses its options, calls the stage's core, and
leaves exit statuses to `console.cli_errors`. Heavy libraries are imported inside the commands that
need them so `rpt --help`, `rpt filter` and `rpt reward` start quickly."""

from rpt_cli.cli import (  # noqa: F401 - registers them
    curves,
    downstream,
    entropy,
    evaluate,
    filter,
    holdout,
    patterns,
    reward,
    rollout,
    scaling,
    train,
)
from rpt_cli.cli.app import app, group_options, main

# `rpt --help` lists the commands in pipeline order
PIPELINE = (
    "holdout",
    "entropy",
    "filter",
    "reward",
    "rollout",
    "train",
    "eval",
    "scaling",
    "curves",
    "patterns",
    "downstream",
)
app.registered_commands.sort(key=lambda command: PIPELINE.index(command.name or command.callback.__name__))
group_options(app)

__all__ = ["app", "main"]
