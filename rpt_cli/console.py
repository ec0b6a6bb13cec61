"""Standard error for people (rich), and the one place that turns exceptions into exit statuses.

Standard output carries data only; everything here writes to standard error.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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


PROGRESS_VARIABLE = "RPT_PROGRESS"
PROGRESS_SECONDS = 30.0


def progress_interval() -> float:
    """Seconds between progress lines in a log, from RPT_PROGRESS (default 30; 0 turns progress
    off, on a terminal too)."""
    text = os.environ.get(PROGRESS_VARIABLE, "").strip()
    if not text:
        return PROGRESS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise UsageError(f"{PROGRESS_VARIABLE}={text}: expected seconds between progress lines (0 turns them off)")
    return seconds


def duration(seconds: float) -> str:
    """A span of time as people read it in a log: 45s, 12m05s, 3h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLines:
    """Plain progress lines for a log (standard error a file or a pipe): the latest state, one
    line every `interval` seconds, from a background thread, so the pace stays steady however
    long a batch or a model load takes. Where the total is known, the share done and an ETA from
    the rate since the first count (model loading left out)."""

    def __init__(self, text: str, interval: float, write=None, clock=None):
        import threading
        import time

        self._clock = clock or time.monotonic
        self.started = self._clock()
        self.text, self.done, self.total = text, None, None
        self._first: tuple[float, float] | None = None  # (time, done) of the first count
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rpt-progress", daemon=True)
        self._thread.start()

    def show(self, text: str, done: float | None = None, total: float | None = None) -> None:
        self.text = text
        if done is not None and total:
            if self._first is None or done < self._first[1]:
                self._first = (self._clock(), done)
            self.done, self.total = done, total
        else:
            self.done = self.total = None

    def line(self) -> str:
        now = self._clock()
        parts = [self.text]
        if self.done is not None:
            share = min(self.done / self.total, 1.0)
            parts.append(f"{share:.0%}")
            first_time, first_done = self._first
            if self.done > first_done and now > first_time:
                rate = (self.done - first_done) / (now - first_time)
                parts.append(f"ETA {duration(max(self.total - self.done, 0) / rate)}")
        parts.append(f"elapsed {duration(now - self.started)}")
        return parts[0] + (" [" + ", ".join(parts[1:]) + "]")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._write(self.line())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def spinner(start: str):
    """Progress on standard error; yields `show(text, done=None, total=None)` to change it (`done`
    of `total` where the total is known: input bytes read, contexts evaluated).

    On a terminal, one line redrawn in place (rich), with a bar and an ETA where the total is
    known. In a log (standard error a file or a pipe), a plain line every RPT_PROGRESS seconds
    (30 by default, `ProgressLines`); a run shorter than that prints none. RPT_PROGRESS=0: none."""
    interval = progress_interval()
    if not stderr.is_terminal:
        if interval == 0:
            yield lambda text, done=None, total=None: None
            return
        lines = ProgressLines(start, interval)
        try:
            yield lines.show
        finally:
            lines.close()
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        _WhereTotalKnown(BarColumn()),
        _WhereTotalKnown(TaskProgressColumn()),
        _WhereTotalKnown(TimeRemainingColumn()),
        console=stderr,
        transient=True,
        disable=interval == 0,
    ) as progress:
        task_id = progress.add_task(start, total=None)
        (task,) = progress.tasks

        def show(text: str, done: float | None = None, total: float | None = None) -> None:
            if done is not None and total:
                progress.update(task_id, description=text, completed=done, total=total)
            else:  # a new stage (eval's next mode): no bar until it counts
                task.total = None
                progress.update(task_id, description=text)

        yield show


class _WhereTotalKnown(ProgressColumn):
    """A column drawn only once the task has a total (else a bar would pulse, an ETA guess)."""

    def __init__(self, column: ProgressColumn):
        super().__init__()
        self.column = column

    def render(self, task):
        return self.column.render(task) if task.total is not None else Text("")


def input_size(path) -> int | None:
    """Bytes of a regular input file (the total of progress over it); None for stdin, a pipe."""
    import stat

    if path in (None, "-"):
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


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
