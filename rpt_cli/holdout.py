"""Held-out documents: `rpt holdout` splits records into training and held-out sides by document,
and `rpt train` / `rpt eval` say when training and evaluation share a document.

A document's side is a pure function of its id and the seed: the first 8 bytes of
SHA-256(seed, NUL, id) as a number. With `--documents N` the N documents with the smallest numbers
are held out; with `--fraction F` every document whose number is below F · 2^64. Either way the
choice does not depend on the order of the records, the machine, or what else is in the file (for
`--fraction`), and every record of a document (a document, or its many samples) goes to one side.

The document of a record is its `doc_id` (samples and rollouts), else for a sample without one the
part of its `DOC@POSITION` id before the last `@` (as `rpt train` and `rpt eval` read it), else its
id field (documents), else its content id (`content_id`, what `rpt entropy` gives a document
without id). Ids are compared as text: 1 and "1" are one document, as in `rpt filter`'s seeded
choices.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rpt_cli.errors import InputError, RecordError, SettingError
from rpt_cli.jsonl import STDIO, ReadStats, parse_line, read_lines, source_name

HELD_OUT_FIELD = "held_out"  # set to true on every record of the held-out side


# fields rpt's stages add to a document, which do not change which document it is
ADDED_FIELDS = (HELD_OUT_FIELD, "offsets", "entropy", "entropy_model", "entropy_top_k", "tokenizer")


def content_id(record: dict, id_field: str = "id") -> str:
    """The id of a document that has none: 16 hex digits of SHA-256 over the record's fields as
    canonical JSON (sorted keys), leaving out the id field and the fields rpt's stages add
    (`ADDED_FIELDS`). It depends on the document alone, not on its line or file, so a training
    file and a held-out file never share an id unless they share the document itself; and
    `rpt holdout` on the export and on `rpt entropy`'s output name the same document alike."""
    fields = {k: v for k, v in record.items() if k != id_field and k not in ADDED_FIELDS}
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class ContentIds:
    """Content ids for the id-less documents of one input (`rpt entropy`, `rpt filter`): a
    document that repeats an earlier one's content gets the id with `-2`, `-3`, … appended, so
    ids still tell a file's records apart; the first copy keeps the plain id, so a copy in another
    file (a held-out one) still shows as the same document."""

    def __init__(self, id_field: str = "id"):
        self.id_field = id_field
        self.seen: dict[str, int] = {}

    def __call__(self, record: dict) -> str:
        plain = content_id(record, self.id_field)
        count = self.seen.get(plain, 0) + 1
        self.seen[plain] = count
        return plain if count == 1 else f"{plain}-{count}"


def document_of(record: dict, id_field: str = "id", lineno: int | None = None):
    """The document a record belongs to, by the one rule `rpt holdout`, `rpt train` and `rpt eval`
    share: its `doc_id`; else, for a sample or rollout (a record with a `context`), the part of
    its `DOC@POSITION` id before the last `@`; else its id field; else, for a document, its
    content id, and for a sample its line number (None when not given: it tells no document)."""
    doc_id = record.get("doc_id")
    if doc_id is not None:
        return doc_id
    value = record.get(id_field)
    if isinstance(value, str) and "@" in value and "context" in record:
        return value.rsplit("@", 1)[0]
    if value is not None:
        return value
    return lineno if "context" in record else content_id(record, id_field)


def document_number(doc_id, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def check_ids(id_field: str) -> Callable[[dict], None]:
    def validate(record: dict) -> None:
        if "doc_id" in record and record["doc_id"] is None:  # not a document: say so, do not fall back
            raise RecordError('field "doc_id" is null; give the document\'s id or leave the field out')
        for name in dict.fromkeys(("doc_id", id_field)):
            value = record.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise RecordError(f'field "{name}" must be a string or an integer')

    return validate


@dataclass
class HoldoutOptions:
    documents: int | None = None
    fraction: float | None = None
    seed: int = 0
    id_field: str = "id"

    def check(self) -> None:
        if (self.documents is None) == (self.fraction is None):
            raise SettingError("documents", "give one of {setting} N (a count) or --fraction F (a share)")
        if self.documents is not None and self.documents < 1:
            raise SettingError("documents", "{setting} must be at least 1")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise SettingError("fraction", "{setting} must be between 0 and 1 (exclusive)")


@dataclass
class HoldoutStats:
    documents: int = 0
    held_out_documents: int = 0
    records: int = 0
    held_out_records: int = 0
    read: ReadStats = field(default_factory=ReadStats)


class Lines:
    """The non-blank lines of an input, readable twice: a file is opened again, standard input is
    kept in a temporary file as it is read (gone when closed)."""

    def __init__(self, path: str):
        self.path = path
        self.source = source_name(path)
        self._spool = None

    def __enter__(self) -> Lines:
        if self.path == STDIO:
            self._spool = tempfile.TemporaryFile()
            for block in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
                self._spool.write(block)
        return self

    def __exit__(self, *exc) -> None:
        if self._spool is not None:
            self._spool.close()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self._spool is None:
            yield from read_lines(self.path)
            return
        self._spool.seek(0)
        for lineno, raw in enumerate(self._spool, start=1):
            if raw.strip():
                yield lineno, raw


def _records(lines: Lines, validate, *, skip_bad: bool, stats: ReadStats | None) -> Iterator[tuple[int, dict]]:
    for lineno, raw in lines:
        try:
            record = parse_line(raw, lines.source, lineno)
            try:
                validate(record)
            except RecordError as exc:
                raise InputError(lines.source, lineno, str(exc)) from None
        except InputError as exc:
            if not skip_bad:
                raise
            if stats is not None:
                stats.skipped.append((lines.source, lineno, exc.reason))
            continue
        if stats is not None:
            stats.records += 1
        yield lineno, record


def split_records(
    lines: Lines, opts: HoldoutOptions, *, skip_bad: bool = False, stats: HoldoutStats | None = None
) -> Iterator[tuple[bool, dict]]:
    """(held out?, record) for every record, in input order. The whole input is read (and
    checked) once before the first record comes out, so a bad line stops the run before any
    output is written; held-out records get `held_out: true`."""
    opts.check()
    stats = stats if stats is not None else HoldoutStats()
    validate = check_ids(opts.id_field)
    seen: set[str] = set()
    chosen: list[tuple[int, str]] = []  # a max-heap (negated) of the smallest numbers so far
    members: set[str] = set()
    for _, record in _records(lines, validate, skip_bad=skip_bad, stats=stats.read):
        key = str(document_of(record, opts.id_field))
        if key in seen:
            continue
        seen.add(key)
        if opts.documents is None:
            continue
        number = document_number(key, opts.seed)
        if len(chosen) < opts.documents:
            heapq.heappush(chosen, (-number, key))
            members.add(key)
        elif number < -chosen[0][0]:
            _, dropped = heapq.heappushpop(chosen, (-number, key))
            members.discard(dropped)
            members.add(key)
    stats.documents = len(seen)
    del seen
    limit = None if opts.fraction is None else int(opts.fraction * 2**64)
    held: set[str] = set()
    for _, record in _records(lines, validate, skip_bad=skip_bad, stats=None):
        key = str(document_of(record, opts.id_field))
        out = key in members if limit is None else document_number(key, opts.seed) < limit
        stats.records += 1
        if out:
            held.add(key)
            stats.held_out_records += 1
            record[HELD_OUT_FIELD] = True
        yield out, record
    stats.held_out_documents = len(held)


# --------------------------------------------------------------------------------------------
# Documents a training run saw, and evaluation samples from them
# --------------------------------------------------------------------------------------------

RUN_DOCUMENTS = "documents.json"  # in an rpt train run folder


def document_digest(doc_id) -> str:
    """16 hex digits naming a document in a run's record (compact, and ids stay private)."""
    return hashlib.sha256(str(doc_id).encode()).hexdigest()[:16]


@dataclass
class TrainingDocuments:
    """What `rpt train` notes about the documents of its samples."""

    digests: set[str] = field(default_factory=set)
    samples: int = 0
    without_document: int = 0
    held_out: int = 0  # samples marked held_out by rpt holdout
    example: object = None

    def notes(self) -> list[str]:
        if not self.held_out:
            return []
        return [
            f"{self.held_out:,} of {self.samples:,} training samples come from held-out documents (marked "
            f"held_out by rpt holdout; e.g. document {self.example!r}): evaluating on those documents measures "
            "what was trained on"
        ]

    def write(self, folder: Path) -> None:
        from rpt_cli.files import write_text

        write_text(
            folder / RUN_DOCUMENTS,
            json.dumps(
                {
                    "digest": "sha256(document id)[:16]",
                    "documents": len(self.digests),
                    "samples_without_document": self.without_document,
                    "document_digests": sorted(self.digests),
                },
                separators=(",", ":"),
            )
            + "\n",
        )


def training_documents(path: str, lines: list[int] | None = None) -> TrainingDocuments:
    """The documents of the samples on `lines` (all when None) of a samples file already checked."""
    wanted = set(lines) if lines is not None else None
    found = TrainingDocuments()
    for lineno, raw in read_lines(path):
        if wanted is not None and lineno not in wanted:
            continue
        record = parse_line(raw, source_name(path), lineno)
        found.samples += 1
        doc_id = document_of(record)
        if doc_id is None:
            found.without_document += 1
            continue
        found.digests.add(document_digest(doc_id))
        if record.get(HELD_OUT_FIELD) is True:
            found.held_out += 1
            if found.example is None:
                found.example = doc_id
    return found


def shared_documents_note(run: Path, samples: list[dict], name: str) -> str | None:
    """A one-line note when evaluation samples come from documents the run trained on (its
    documents.json); None when none do, or the run recorded no documents (runs of older rpt). A
    documents.json that cannot be read gives a note saying that the check could not be made."""
    path = run / RUN_DOCUMENTS
    if not path.exists() and not path.is_symlink():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        digests = set(recorded["document_digests"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return (
            f"cannot check whether the samples share documents with what {name} was trained on: {path} "
            f"is unreadable ({why})"
        )
    shared_docs: dict[str, object] = {}
    shared = 0
    for record in samples:
        doc_id = document_of(record)
        if doc_id is not None and document_digest(doc_id) in digests:
            shared += 1
            shared_docs.setdefault(str(doc_id), doc_id)
    if not shared:
        return None
    example = next(iter(shared_docs.values()))
    return (
        f"{shared:,} of {len(samples):,} samples come from {len(shared_docs):,} document(s) that {name} was trained "
        f"on (e.g. {example!r}; {os.path.join(str(run), RUN_DOCUMENTS)}): they measure recall, not prediction; "
        "hold documents out with rpt holdout"
    )


__all__ = [
    "HELD_OUT_FIELD",
    "RUN_DOCUMENTS",
    "HoldoutOptions",
    "HoldoutStats",
    "Lines",
    "TrainingDocuments",
    "document_number",
    "ContentIds",
    "content_id",
    "document_of",
    "shared_documents_note",
    "split_records",
    "training_documents",
]
