"""`rpt filter`: pick the positions worth reasoning about and turn them into samples.

Pure Python on purpose (no torch import): it runs on scored documents from `rpt entropy` and must
start instantly and stream at disk speed.

A position i of a document becomes a sample when it has at least `min_context_tokens` tokens of
context, its entropy passes the thresholds, and its byte offset is a character boundary (a context
that ends inside a UTF-8 character cannot be written as text). The sample carries the text before
the token as `context`, the next `target_tokens` tokens as `target`, and their cumulative byte
lengths as `boundaries` (the set L_gt of Eq. 3), taken from the document's own tokenization.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from rpt_cli import paper
from rpt_cli.errors import SettingError
from rpt_cli.records import DOC_ONLY_FIELDS

# The paper's nested difficulty splits (Section 4.1): a position belongs to every split whose
# threshold its entropy exceeds; its label is the hardest of them.
SPLIT_THRESHOLDS = paper.SPLIT_THRESHOLDS
SPLIT_NAMES = ("easy", "medium", "hard")
# Fields of a scored document that a sample replaces rather than carries along.


def split_label(entropy: float) -> str:
    label = "none"
    for name in SPLIT_NAMES:
        if entropy > SPLIT_THRESHOLDS[name]:
            label = name
    return label


def in_split(label: str, split: str) -> bool:
    """Nested membership: a `hard` position is also in `medium` and `easy`."""
    if split == "all":
        return True
    if label == "none":
        return False
    return SPLIT_NAMES.index(label) >= SPLIT_NAMES.index(split)


# the options of `rpt filter` whose names are not their fields' (SettingError.worded)
OPTIONS = {"min_entropy": "--min", "max_entropy": "--max"}


@dataclass
class FilterOptions:
    min_entropy: float | None = None
    max_entropy: float | None = None
    split: str | None = None
    min_context_tokens: int = 16
    target_tokens: int = 8
    max_context_tokens: int | None = None
    per_doc: int | None = None
    fraction: float | None = None
    seed: int = 0
    text_field: str = "text"
    id_field: str = "id"
    # document fields copied into every sample even when larger than FIELD_COPY_LIMIT
    keep_fields: tuple[str, ...] = ()

    def check(self) -> None:
        """SettingError naming the field; `rpt filter` words it as the option (`OPTIONS`)."""
        if self.split is not None and self.split not in SPLIT_NAMES:
            raise SettingError("split", f"{{setting}} {self.split}: choose one of {', '.join(SPLIT_NAMES)}")
        if self.min_context_tokens < 1:
            raise SettingError("min_context_tokens", "{setting} must be at least 1 (a sample needs some context)")
        for name in ("target_tokens", "max_context_tokens", "per_doc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(name, "{setting} must be at least 1")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise SettingError("fraction", "{setting} must be in (0, 1]")
        for name in ("min_entropy", "max_entropy"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise SettingError(name, f"{{setting}} {value}: must be a finite number")
        if self.min_entropy is not None and self.max_entropy is not None and self.max_entropy < self.min_entropy:
            raise SettingError("max_entropy", "{setting} must not be below --min")

    @property
    def sampling(self) -> bool:
        return self.per_doc is not None or self.fraction is not None


@dataclass
class FilterStats:
    documents: int = 0
    positions: int = 0
    mid_character: int = 0
    samples: Counter = field(default_factory=Counter)
    # field name -> documents whose copy of it was too large to repeat in each of their samples
    uncopied_fields: Counter = field(default_factory=Counter)


# A document field larger than this (as JSON) is not repeated in each of the document's samples
# (a 50 MB field copied into 160 samples is an 8 GB output) unless --keep-fields names it.
FIELD_COPY_LIMIT = 64 * 1024


def _json_size(value) -> int:
    if isinstance(value, str):
        return len(value) + 2  # a lower bound is enough to tell small fields from huge ones
    if isinstance(value, (int, float, bool)) or value is None:
        return 8
    return len(orjson.dumps(value))


def _doc_rng(seed: int, doc_id) -> random.Random:
    # seeded by document, not by order: the same document gives the same sample whatever the
    # shard, order or company it arrives in
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _is_char_start(data: bytes, pos: int) -> bool:
    return pos >= len(data) or (data[pos] & 0xC0) != 0x80


def eligible_positions(doc: dict, opts: FilterOptions) -> list[int]:
    entropy = doc["entropy"]
    low, high = opts.min_entropy, opts.max_entropy
    split_min = SPLIT_THRESHOLDS[opts.split] if opts.split else None
    out = []
    for i in range(opts.min_context_tokens, len(entropy)):
        value = entropy[i]
        if value is None:
            continue
        if low is not None and not value > low:
            continue
        if high is not None and value > high:
            continue
        if split_min is not None and not value > split_min:
            continue
        out.append(i)
    return out


def make_samples(doc: dict, doc_id, opts: FilterOptions, stats: FilterStats) -> Iterator[dict]:
    text: str = doc[opts.text_field]
    offsets: list[int] = doc["offsets"]
    entropy = doc["entropy"]
    n = len(entropy)
    data = text.encode("utf-8")
    positions = []
    for i in eligible_positions(doc, opts):
        if _is_char_start(data, offsets[i]):
            positions.append(i)
        else:
            stats.mid_character += 1
    if opts.sampling:
        rng = _doc_rng(opts.seed, doc_id)
        if opts.fraction is not None:
            positions = [i for i in positions if rng.random() < opts.fraction]
        if opts.per_doc is not None and len(positions) > opts.per_doc:
            positions = sorted(rng.sample(positions, opts.per_doc))
    extra = {k: v for k, v in doc.items() if k not in DOC_ONLY_FIELDS and k not in (opts.text_field, opts.id_field)}
    if len(positions) > 1:
        for name in [k for k, v in extra.items() if k not in opts.keep_fields and _json_size(v) > FIELD_COPY_LIMIT]:
            del extra[name]
            stats.uncopied_fields[name] += 1
    for i in positions:
        start_token = 0
        if opts.max_context_tokens is not None:
            start_token = max(0, i - opts.max_context_tokens)
            while not _is_char_start(data, offsets[start_token]):
                start_token += 1  # cut at the next token boundary that is also a character boundary
        last = min(i + opts.target_tokens, n)
        while not _is_char_start(data, offsets[last]):
            # finish the character with the document's own next tokens (the text's end is always a
            # character boundary), so every token end inside the target is listed in boundaries
            last += 1
        end = offsets[last]
        base = offsets[i]
        label = split_label(entropy[i])
        stats.samples[label] += 1
        sample = {
            "id": f"{doc_id}@{i}",
            "doc_id": doc_id,
            "position": i,
            "context": data[offsets[start_token] : base].decode("utf-8"),
            "target": data[base:end].decode("utf-8"),
            "boundaries": [offsets[j] - base for j in range(i + 1, last + 1)],
            "entropy": entropy[i],
            "split": label,
        }
        if opts.sampling:
            sample["filter_seed"] = opts.seed
        for key, value in extra.items():
            sample.setdefault(key, value)
        yield sample


def filter_documents(
    docs: Iterable[tuple[int, dict]], opts: FilterOptions, stats: FilterStats | None = None, *, source: str = "<input>"
) -> Iterator[dict]:
    """Samples from (line number, scored document) pairs; a document without id is named by its
    content (`holdout.content_id`, as `rpt entropy` names it). Two documents with one id would
    give samples with one id: an InputError naming both lines."""
    from rpt_cli.errors import InputError
    from rpt_cli.holdout import ContentIds
    from rpt_cli.resume import id_key
    from rpt_cli.rollout import duplicate_id_message

    opts.check()
    stats = stats if stats is not None else FilterStats()
    seen: dict[bytes, int] = {}
    content_id = ContentIds(opts.id_field)
    for lineno, doc in docs:
        stats.documents += 1
        stats.positions += len(doc["entropy"])
        doc_id = doc.get(opts.id_field)
        doc_id = content_id(doc) if doc_id is None else doc_id
        key = id_key(doc_id)
        if key in seen:
            raise InputError(source, lineno, duplicate_id_message(doc_id, seen[key]).replace("samples", "documents"))
        seen[key] = lineno
        yield from make_samples(doc, doc_id, opts, stats)
