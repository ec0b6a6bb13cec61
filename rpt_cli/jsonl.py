"""Streaming JSON Lines in and out, with line-numbered errors and atomic output files.

Every stage reads records through `read_records` and writes them through `RecordWriter`, so the
command-line contract (errors as `FILE:LINE: reason`, exit 2, no partial `-o` file, quiet broken
pipes) lives in one place.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from rpt_cli.errors import InputError, RecordError, UsageError

STDIO = "-"

Validator = Callable[[dict], None]


@dataclass
class ReadStats:
    """What a reader saw; `skipped` holds (line, reason) of records dropped by `--skip-bad`;
    `bytes` counts the input read so far (the progress over a file of known size)."""

    records: int = 0
    bytes: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)

    def report(self, console) -> None:
        if self.skipped:
            console.print(
                f"[yellow]skipped {len(self.skipped)} bad record(s)[/]; first: "
                f"{self.skipped[0][0]}:{self.skipped[0][1]}: {self.skipped[0][2]}"
            )


def source_name(path: str | None) -> str:
    return "<stdin>" if path in (None, STDIO) else str(path)


def _open_binary(path: str | None) -> IO[bytes]:
    if path in (None, STDIO):
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(str(path), None, "no such file") from None
    except IsADirectoryError:
        raise InputError(str(path), None, "is a directory, not a JSONL file") from None
    except PermissionError:
        raise InputError(str(path), None, "permission denied") from None


# 19 digits in a row may be an integer beyond 64 bits, which orjson would read as a float
_LONG_DIGITS = re.compile(rb"\d{19}")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_line(raw: bytes, source: str, lineno: int) -> dict:
    try:
        if _LONG_DIGITS.search(raw):
            # rare: the standard library keeps big integers exact (ids, hashes) where orjson cannot
            obj = json.loads(raw, parse_constant=_reject_constant)
        else:
            obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError) as exc:
        reason = exc.args[0].split(":")[0] if isinstance(exc, orjson.JSONDecodeError) else str(exc).split(":")[0]
        raise InputError(source, lineno, f"invalid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise InputError(source, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_lines(path: str | None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) for every non-blank line; blank lines are allowed and ignored."""
    stream = _open_binary(path)
    try:
        for lineno, raw in enumerate(stream, start=1):
            if raw.strip():
                yield lineno, raw
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def read_records(
    path: str | None,
    validate: Validator | None = None,
    *,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    shard: tuple[int, int] | None = None,
    with_lines: bool = False,
) -> Iterator[Any]:
    """Yield the JSON objects of a JSONL file (or stdin for None / "-"), validated as read.

    Errors carry the file and line. With `skip_bad`, bad records are counted in `stats` and skipped
    instead. `shard=(i, n)` (1-based i) keeps only the i-th of every n non-blank lines, before
    parsing, so the shards of a file are disjoint and together hold every line exactly once.
    With `with_lines`, yields (line number, record) pairs.
    """
    source = source_name(path)
    stats = stats if stats is not None else ReadStats()
    index = -1
    for lineno, raw in read_lines(path):
        stats.bytes += len(raw)
        index += 1
        if shard is not None and index % shard[1] != shard[0] - 1:
            continue
        try:
            record = parse_line(raw, source, lineno)
            if validate is not None:
                try:
                    validate(record)
                except RecordError as exc:
                    raise InputError(source, lineno, str(exc)) from None
        except InputError as exc:
            if not skip_bad:
                raise
            stats.skipped.append((source, lineno, exc.reason))
            continue
        stats.records += 1
        yield (lineno, record) if with_lines else record


def dumps(record: Any) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
        # an integer beyond 64 bits that a user gave: written back exactly, as read
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


class RecordWriter:
    """Write records to an output (`outputs.py`): standard output (path None or "-"), a stream
    such as /dev/null or a FIFO in place, or a file atomically: under a temporary name beside it,
    renamed into place only when the `with` block ends without an exception, so a failed or
    interrupted run never leaves a partial output file (and never clobbers an earlier complete one).
    """

    def __init__(self, path: str | None, option: str = "-o"):
        self.path = None if path in (None, STDIO) else str(path)
        self.option = option
        self.count = 0
        self._out = None

    def __enter__(self) -> RecordWriter:
        from rpt_cli.files import OutputStream, plan_output

        self._out = OutputStream(plan_output(self.path, self.option)).__enter__()
        return self

    def write(self, record: Any) -> None:
        self._out.write(dumps(record))
        self.count += 1
        if self.path is None and self.count % 64 == 0:
            self._out.flush()

    def write_all(self, records: Iterable[Any]) -> int:
        for record in records:
            self.write(record)
        return self.count

    def __exit__(self, exc_type, exc, tb) -> None:
        self._out.__exit__(exc_type, exc, tb)


_DATASET_BUILDERS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".txt": "text",
    ".arrow": "arrow",
}


def read_dataset(
    spec: str,
    validate: Validator | None = None,
    *,
    split: str = "train",
    config: str | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[int, dict]]:
    """(row number, record) pairs from a `datasets` source: a local parquet/JSON/CSV/text file or
    folder, or a hub dataset name, streamed so memory stays flat. Row numbers start at 1 and play
    the part of line numbers in errors and default ids."""
    from pathlib import Path

    import datasets

    stats = stats if stats is not None else ReadStats()
    path = Path(spec).expanduser()
    try:
        if path.is_file():
            builder = _DATASET_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UsageError(f"--dataset {spec}: unknown file type (use parquet, json, jsonl, csv or txt)")
            rows = datasets.load_dataset(builder, data_files=str(path), split=split, streaming=True)
        else:
            rows = datasets.load_dataset(spec, config, split=split, streaming=True)
        for index, row in enumerate(rows):
            if shard is not None and index % shard[1] != shard[0] - 1:
                continue
            try:
                if validate is not None:
                    validate(row)
            except RecordError as exc:
                if not skip_bad:
                    raise InputError(spec, index + 1, str(exc)) from None
                stats.skipped.append((spec, index + 1, str(exc)))
                continue
            stats.records += 1
            yield index + 1, row
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError, ValueError) as exc:
        if isinstance(exc, (InputError, RecordError)):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--dataset {spec}: cannot load ({first})") from None
