"""The `rpt` command line: one thin module per command (`rpt_cli/cli/<command>.py`), all on one
Typer app (`app.py`, with the options several commands share). Each command parses its options,
calls the stage's core, and leaves exit statuses to `console.cli_errors`. Heavy libraries are
imported inside the commands that need them so `rpt --help`, `rpt filter` and `rpt reward` start
quickly."""

# registered in pipeline order, which `rpt --help` lists
from rpt_cli.cli import curves, entropy, evaluate, filter, reward, rollout, scaling, train  # noqa: E402, F401, I001
from rpt_cli.cli.app import app, main

__all__ = ["app", "main"]
