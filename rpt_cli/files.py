"""Files: where output goes (`-o`, `--details`, `--reports`, plots, run-folder files), checked
before any work and written so that what a path names is honoured and no partial or temporary file
survives; and reading an append-only log whose last line a kill may have torn.

- `-` or nothing: standard output.
- A path that names a stream, not a file (a character device such as /dev/null, a FIFO, a
  socket, or /dev/stdout, /dev/stderr, /dev/fd/N): written in place, streaming; never replaced.
- Anything else is a file, written atomically: under a temporary name beside it, renamed into
  place when complete (a failed or interrupted run leaves the old file, or none, and no temporary
  one). A symlink's target is replaced and the link kept. A new file gets the mode the umask
  gives; a replaced file keeps its mode.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from rpt_cli.errors import InputError, RuntimeFailure, UsageError
from rpt_cli.jsonl import STDIO

_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")
_STANDARD_FDS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class Output:
    """A checked output: `kind` is stdout, fd (an open descriptor named by path), stream (a
    device, FIFO or socket, written in place) or file (written atomically at `path`, the real
    path behind any symlink)."""

    given: str | None
    option: str
    kind: str
    path: str | None = None
    fd: int | None = None

    @property
    def label(self) -> str:
        return f"{self.option} {self.given}"


def plan_output(given: str | None, option: str = "-o") -> Output:
    """Check an output path before any work; a UsageError (exit 2) names what is wrong."""
    if given is None or given == STDIO:
        return Output(given, option, "stdout", fd=1)
    if given == "":
        raise UsageError(f"{option}: empty file name")
    match = _FD_PATH.match(given)
    fd = _STANDARD_FDS.get(given, int(match.group(1)) if match else None)
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"{option} {given}: file descriptor {fd} is not open") from None
        return Output(given, option, "stdout" if fd == 1 else "fd", fd=fd)
    real = os.path.realpath(os.path.expanduser(given))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{option} {given}: {exc.strerror.lower()}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{option} {given}: is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        if not os.access(real, os.W_OK):
            raise UsageError(f"{option} {given}: permission denied")
        return Output(given, option, "stream", path=real)
    if mode is None and given.endswith(os.sep):
        raise UsageError(f"{option} {given}: names a folder (it ends with {os.sep}); give a file name")
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {given}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {given}: folder {folder} is not writable")
    return Output(given, option, "file", path=real)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Sequence[tuple[str, str | None]], inputs: Sequence[str | None] = ()) -> list[Output]:
    """Check every output of a command, as (option, path) pairs (path None: standard output; leave
    out the optional outputs not asked for), before any work: each is a writable place
    (`plan_output`), none is an input file, and no two write to the same file or both to
    standard output."""
    planned = [plan_output(path, option) for option, path in outputs]
    for out in planned:
        if out.kind != "file":
            continue
        for source in inputs:
            if source not in (None, STDIO) and os.path.exists(source) and _same_file(out.path, source):
                raise UsageError(f"{out.label}: is the input file {source}; write to another file")
    for i, first in enumerate(planned):
        for second in planned[i + 1 :]:
            clash = (first.kind == second.kind == "stdout") or (
                first.kind == second.kind == "file" and _same_file(first.path, second.path)
            )
            if clash:
                where = "standard output" if first.kind == "stdout" else f"the same file {first.path}"
                raise UsageError(f"{first.label} and {second.label} both write to {where}; give them different files")
    return planned


class OutputStream:
    """A binary stream to a checked output (see the module docstring for what each kind does).
    Write errors such as a full disk become a one-line RuntimeFailure naming the output; the
    temporary file of an unfinished file output is removed on every exit path."""

    def __init__(self, output: Output):
        self.output = output
        self._stream: IO[bytes] | None = None
        self._tmp: str | None = None

    def __enter__(self) -> OutputStream:
        out = self.output
        try:
            if out.kind == "stdout":
                self._stream = sys.stdout.buffer
            elif out.kind == "fd":
                self._stream = os.fdopen(os.dup(out.fd), "wb")
            elif out.kind == "stream":
                self._stream = open(out.path, "wb")
            else:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f".{os.path.basename(out.path)}.", suffix=".tmp", dir=os.path.dirname(out.path)
                )
                self._stream = os.fdopen(fd, "wb")
        except OSError as exc:
            raise self._failure(exc) from None
        return self

    def _failure(self, exc: OSError) -> RuntimeFailure:
        return RuntimeFailure(
            f"cannot write {self.output.given or 'standard output'}: {(exc.strerror or str(exc)).lower()}"
        )

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failure(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failure(exc) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        kind = self.output.kind
        if kind == "stdout":
            if exc_type is None:
                self.flush()
            return
        try:
            if exc_type is None:
                self.flush()
                if kind == "file":
                    os.fsync(self._stream.fileno())  # whole on disk before it takes the name
                    os.chmod(self._tmp, self._mode())
                self._stream.close()
                if kind == "file":
                    os.replace(self._tmp, self.output.path)
                    self._tmp = None
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError):
                raise self._failure(exc) from None
            raise
        finally:
            if self._tmp is not None:  # the run failed or was interrupted: no partial file survives
                try:
                    self._stream.close()
                except OSError:
                    pass
                try:
                    os.unlink(self._tmp)
                except OSError:
                    pass
                self._tmp = None
            elif kind != "file" and not self._stream.closed:
                try:
                    self._stream.close()
                except OSError:
                    pass

    def _mode(self) -> int:
        try:
            return stat.S_IMODE(os.stat(self.output.path).st_mode)  # an existing file keeps its mode
        except FileNotFoundError:
            return 0o666 & ~_umask()


def write_text(path: str | os.PathLike, text: str) -> None:
    """A small file (a run's config.yaml, run.json, a checkpoint's marker), written as every output
    is: either absent or complete, even across a crash."""
    with OutputStream(plan_output(str(path))) as out:
        out.write(text.encode("utf-8"))


def read_log(path: str) -> list[tuple[int, dict]]:
    """(line number, record) of an append-only log such as a run's metrics.jsonl. Its last line
    may be torn by a run killed mid-write, and is then left out; any other bad line is an input
    error naming the file and line."""
    from rpt_cli.jsonl import parse_line, read_lines, source_name

    source = source_name(path)
    lines = list(read_lines(path))
    out = []
    for index, (lineno, raw) in enumerate(lines):
        try:
            out.append((lineno, parse_line(raw, source, lineno)))
        except InputError:
            if index == len(lines) - 1:
                break
            raise
    return out


__all__ = ["Output", "OutputStream", "check_outputs", "plan_output", "read_log", "write_text"]
