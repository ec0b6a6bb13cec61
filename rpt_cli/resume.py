"""Output in chunks, and output that survives a crash and resumes (`--resume`).

Long sampling runs write records chunk by chunk. Three destinations:
- standard output: each chunk is flushed as soon as it is written, so a pipe sees progress;
- `-o FILE`: the atomic `RecordWriter` (no partial file, ever);
- `-o FILE --resume`: an append log. Each chunk is appended as whole lines and flushed to disk.
  A crash can only leave an incomplete last line, which `ResumableFile` drops when it reopens the
  file; the ids of the complete records tell the run which samples to skip. So a resumed run
  neither duplicates nor corrupts a record.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

import orjson

from rpt_cli.errors import InputError, UsageError
from rpt_cli.jsonl import RecordWriter, dumps


def id_key(value: Any) -> bytes:
    """A hashable, type-exact key for a record id (1 and "1" differ)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class StdoutChunks:
    """Chunks to standard output, flushed per chunk."""

    def __enter__(self) -> StdoutChunks:
        self.stream = sys.stdout.buffer
        return self

    def write_chunk(self, records: Iterable[dict]) -> None:
        self.stream.write(b"".join(dumps(record) for record in records))
        self.stream.flush()

    def __exit__(self, *exc) -> None:
        return None


class AtomicFileChunks:
    """Chunks into `-o FILE` through `RecordWriter`: the file appears only when the run succeeds."""

    def __init__(self, path: str):
        self.writer = RecordWriter(path)

    def __enter__(self) -> AtomicFileChunks:
        self.writer.__enter__()
        return self

    def write_chunk(self, records: Iterable[dict]) -> None:
        self.writer.write_all(records)

    def __exit__(self, *exc) -> None:
        self.writer.__exit__(*exc)


class ResumableFile:
    """An append-only JSONL file that can be reopened after a crash.

    `done` holds the id keys of the complete records found on opening; `dropped_partial` tells
    whether an incomplete last line (the trace of a crash mid-write) was cut off.
    """

    def __init__(self, path: str, id_field: str = "id", settings_field: str = "rollout"):
        self.path = str(path)
        self.id_field = id_field
        self.settings_field = settings_field
        self.done: set[bytes] = set()
        self.dropped_partial = False
        # the distinct settings records of the file say they were made with: (first line, settings)
        self.settings: list[tuple[int, dict]] = []
        self._stream = None

    def __enter__(self) -> ResumableFile:
        from rpt_cli.files import plan_output

        if plan_output(self.path).kind != "file":
            raise UsageError(
                f"-o {self.path}: --resume reads back and appends to a regular file, not a device, "
                "pipe or standard stream"
            )
        if os.path.exists(self.path):
            self._recover()
        return self

    def _recover(self) -> None:
        with open(self.path, "rb") as stream:
            lines = stream.read().split(b"\n")
        # a file that ends with "\n" splits into [..., b""]; anything else left at the end is an
        # incomplete line: a chunk whose writing the crash interrupted
        *complete, tail = lines
        good_bytes = 0
        for lineno, raw in enumerate(complete, start=1):
            record = self._parse(raw)
            if record is None:
                if lineno == len(complete) and not tail.strip():
                    # a torn last line that happens to end in a newline: the same crash trace
                    tail = raw
                    break
                raise InputError(
                    self.path,
                    lineno,
                    "not a complete JSON record; the file was changed by "
                    "something else than rpt, so it cannot be resumed safely",
                )
            if record is not ...:
                if self.id_field not in record:
                    raise InputError(
                        self.path,
                        lineno,
                        f'record has no "{self.id_field}"; cannot tell which samples it holds, so it cannot be resumed',
                    )
                self.done.add(id_key(record[self.id_field]))
                made_with = record.get(self.settings_field)
                if isinstance(made_with, dict) and all(made_with != seen for _, seen in self.settings):
                    self.settings.append((lineno, made_with))
            good_bytes += len(raw) + 1
        if tail.strip():
            self.dropped_partial = True
            with open(self.path, "r+b") as stream:
                stream.truncate(good_bytes)
                stream.flush()
                os.fsync(stream.fileno())

    def check_settings(self, settings: dict) -> None:
        """Refuse to add records made with other settings than those already in the file: one
        file would mix two experiments without a word. Settings a record does not carry (files of
        an older rpt) are not compared."""
        for lineno, recorded in self.settings:
            differences = [
                f"{key} {recorded[key]!r} there, {value!r} now"
                for key, value in settings.items()
                if key in recorded and recorded[key] != value
            ]
            if differences:
                raise InputError(
                    self.path,
                    lineno,
                    "--resume: the file holds records made with other settings ("
                    + "; ".join(differences)
                    + "); resume with the same settings, or write to "
                    "another file",
                )

    @staticmethod
    def _parse(raw: bytes):
        """The record on a line, ... for a blank line, None for a broken one."""
        if not raw.strip():
            return ...
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    def write_chunk(self, records: Iterable[dict]) -> None:
        if self._stream is None:  # opened at the first write: a run that fails to start leaves no file
            self._stream = open(self.path, "ab")
        # one write of whole lines, then to disk: a crash loses at most this chunk's tail
        self._stream.write(b"".join(dumps(record) for record in records))
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def __exit__(self, *exc) -> None:
        if self._stream is not None:
            self._stream.close()


def open_chunk_output(path: str | None, *, resume: bool = False, id_field: str = "id"):
    """The writer for a run's output: see the module docstring for the three cases."""
    if resume:
        if path in (None, "-"):
            raise UsageError("--resume needs -o FILE: standard output cannot be read back to see what was done")
        return ResumableFile(path, id_field)
    if path in (None, "-"):
        return StdoutChunks()
    return AtomicFileChunks(path)
