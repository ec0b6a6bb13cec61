"""Standard error for people (rich), and the one place that turns exceptions into exit statuses.

Standard output carries data only; everything here writes to standard error.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

from rich.console import Console

from rpt_cli.errors import InputError, RuntimeFailure, SettingError, UsageError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class Terminated(BaseException):
    """Raised by the SIGTERM handler (`handle_sigterm`): a BaseException, like KeyboardInterrupt,
    so that library code catching Exception lets it through and every `with` block unwinds (no
    temporary output file survives)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def handle_sigterm() -> None:
    """End on SIGTERM by unwinding, as on Ctrl-C, instead of dying where the process stands."""
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)


def error_exit(message: str, status: int) -> None:
    # one line, no markup interpretation: messages quote user text
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def end_quietly_on_closed_pipe() -> None:
    """Exit 0 when standard output's reader has gone (`rpt ... | head`). Python would complain
    again when flushing stdout at exit: point it at /dev/null first."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(0) from None


@contextmanager
def spinner(start: str):
    """One line of progress on standard error, redrawn in place on a terminal (nothing when standard
    error is a file or a pipe); yields `show(text)` to change it."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        task = progress.add_task(start)
        yield lambda text: progress.update(task, description=text)


@contextmanager
def cli_errors():
    """Map exceptions to the CLI contract: bad input 2, runtime failure 1, Ctrl-C 130,
    a closed pipe (`rpt ... | head`) ends quietly with status 0."""
    try:
        yield
    except (InputError, UsageError) as exc:
        error_exit(str(exc), EXIT_BAD_INPUT)
    except SettingError as exc:  # core code names the field; users know the option
        error_exit(exc.worded(), EXIT_BAD_INPUT)
    except RuntimeFailure as exc:
        error_exit(str(exc), EXIT_RUNTIME)
    except BrokenPipeError:
        end_quietly_on_closed_pipe()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Terminated:
        print("terminated", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_TERMINATED) from None
    except (SystemExit, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean message
        if os.environ.get("RPT_DEBUG"):
            traceback.print_exc()
        error_exit(f"{type(exc).__name__}: {exc} (set RPT_DEBUG=1 for a traceback)", EXIT_RUNTIME)
