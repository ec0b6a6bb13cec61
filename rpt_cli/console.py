"""Standard error for people (rich), and the one place that turns exceptions into exit statuses.

Standard output carries data only; everything here writes to standard error.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

from rich.console import Console

from rpt_cli.jsonl import InputError, RuntimeFailure, UsageError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def error_exit(message: str, status: int) -> None:
    # one line, no markup interpretation: messages quote user text
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


@contextmanager
def cli_errors():
    """Map exceptions to the CLI contract: bad input 2, runtime failure 1, Ctrl-C 130,
    a closed pipe (`rpt ... | head`) ends quietly with status 0."""
    try:
        yield
    except (InputError, UsageError) as exc:
        error_exit(str(exc), EXIT_BAD_INPUT)
    except RuntimeFailure as exc:
        error_exit(str(exc), EXIT_RUNTIME)
    except BrokenPipeError:
        # Python would complain again when flushing stdout at exit: point it at /dev/null first
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (SystemExit, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean message
        if os.environ.get("RPT_DEBUG"):
            traceback.print_exc()
        error_exit(f"{type(exc).__name__}: {exc} (set RPT_DEBUG=1 for a traceback)", EXIT_RUNTIME)
