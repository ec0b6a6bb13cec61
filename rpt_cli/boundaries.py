"""Whose tokens a sample's `boundaries` are, and re-deriving them with the policy's tokenizer.

`boundaries` (the set L_gt of Eq. 3) are token ends of the tokenizer that made the sample: the
proxy model's in `rpt entropy`. Eq. 3 means the policy's own tokens, so a policy with another
tokenizer would be judged against foreign boundaries. `rpt entropy` therefore records a
`tokenizer` identity (a name and a fingerprint of the vocabulary, merges, normalization and
pre-tokenization) that `rpt filter` carries into every sample, and the stages that score a policy
(`rpt train`, `rpt eval`, `rpt reward` with a model) compare it with the policy's:

- same fingerprint: the boundaries are used as they are;
- no `tokenizer` field (older or hand-made samples): used as they are, with a note;
- another fingerprint: re-derived from `context + target` with the policy's tokenizer. The
  context must end on one of its token boundaries (else this position is not a token start for
  the policy and the sample cannot be used: a one-line error naming both tokenizers). The target
  is cut from the document, so its last word may continue after it; since tokens never cross a
  pre-tokenizer word, only the token ends before the target's last word are certain, and those
  are the re-derived boundaries (tokenizers without a pre-tokenizer: all but the last token's end).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rpt_cli.errors import InputError, RecordError
from rpt_cli.jsonl import ReadStats
from rpt_cli.tokens import DocTokenizer, TokenizedDoc

FIELD = "tokenizer"
# what decides where tokens end in a text; the decoder, post-processor (BOS), padding and
# truncation settings do not
_TOKENIZATION_PARTS = ("normalizer", "pre_tokenizer", "model", "added_tokens")
CHUNK = 512  # samples tokenized per call


@dataclass(frozen=True)
class TokenizerIdentity:
    name: str
    fingerprint: str

    def as_field(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint}

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


def fingerprint(tokenizer) -> str:
    """16 hex digits of SHA-256 over what decides a text's tokens: vocabulary, merges,
    normalization, pre-tokenization and added tokens (fast tokenizers), or class, vocabulary and
    case folding (slow ones)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        parts: Any = {key: spec.get(key) for key in _TOKENIZATION_PARTS}
    else:
        parts = {
            "class": type(tokenizer).__name__,
            "vocab": sorted(tokenizer.get_vocab().items()),
            "lowercase": getattr(tokenizer, "do_lower_case", None),
        }
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def identity_of(tokenizer, name: str) -> TokenizerIdentity:
    return TokenizerIdentity(name, fingerprint(tokenizer))


def recorded_identity(record: dict) -> TokenizerIdentity | None:
    """The record's `tokenizer` field, checked; None when it has none."""
    value = record.get(FIELD)
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("name"), str)
        or not isinstance(value.get("fingerprint"), str)
        or not value["fingerprint"]
    ):
        raise RecordError(
            f'field "{FIELD}" must be an object with string "name" and "fingerprint" '
            f"(as rpt entropy writes it), got {value!r}"
        )
    return TokenizerIdentity(value["name"], value["fingerprint"])


def rollout_identity(record: dict) -> TokenizerIdentity | None:
    """The tokenizer of the policy that made a rollout (`rollout.tokenizer`, records.md §4),
    checked; None when the rollout does not say (made by an older rpt, or by hand)."""
    meta = record.get("rollout")
    if not isinstance(meta, dict) or meta.get(FIELD) is None:
        return None
    try:
        return recorded_identity(meta)
    except RecordError as exc:
        raise RecordError(f"rollout.{exc}") from None


def check_identity_field(record: dict) -> None:
    """A validator piece: a present `tokenizer` field must be well formed."""
    recorded_identity(record)


class PolicyTokenizer:
    """The policy's tokenizer as far as boundaries go: its identity, and its token ends in a
    sample's target."""

    def __init__(self, tokenizer, name: str, spec: str | None = None):
        self.identity = identity_of(tokenizer, name)
        self.spec = spec or name  # what the user passed to --model, for advice
        self.doc_tokenizer = DocTokenizer(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        # without a pre-tokenizer the whole text is one word, and words say nothing
        self.word_level = backend is not None and backend.pre_tokenizer is not None

    def rederive(self, contexts: Sequence[str], targets: Sequence[str]) -> list[tuple[int, ...] | str]:
        """For each (context, target): the byte lengths of target prefixes that end on one of this
        tokenizer's token boundaries and are certain whatever follows the target, or the reason
        there are none."""
        docs = self.doc_tokenizer([c + t for c, t in zip(contexts, targets)], words=self.word_level)
        return [
            self._boundaries(doc, len(c.encode("utf-8")), len(t.encode("utf-8")))
            for doc, c, t in zip(docs, contexts, targets)
        ]

    def _boundaries(self, doc: TokenizedDoc, start: int, length: int) -> tuple[int, ...] | str:
        offsets = doc.offsets
        if start not in set(offsets):
            return "the context does not end on one of its token boundaries (its next token starts inside the context)"
        certain_end = self._certain_end(doc)
        found = tuple(o - start for o in offsets if start < o <= min(certain_end, start + length))
        if not found:
            return (
                "none of its token ends in the target is certain (the target's first token may run on into "
                "the document's next words)"
            )
        return found

    @staticmethod
    def _certain_end(doc: TokenizedDoc) -> int:
        """Byte offset up to which the tokens cannot change when the text goes on: the start of
        the last word (tokens never cross words), or of the last token when words are unknown."""
        offsets, words = doc.offsets, doc.words
        last = len(offsets) - 2  # index of the last token
        if last < 0:
            return 0
        if words is None or words[last] is None:
            return offsets[last]
        first = last
        while first > 0 and words[first - 1] == words[last]:
            first -= 1
        return offsets[first]


@dataclass
class Alignment:
    """What comparing a file's samples with the policy's tokenizer found."""

    policy: TokenizerIdentity
    unmarked: int = 0
    rederived: Counter = field(default_factory=Counter)  # TokenizerIdentity -> samples re-derived
    kept: list[int] = field(default_factory=list)  # indices of the samples kept (all but --skip-bad's)
    skipped: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.unmarked:
            out.append(
                f"{self.unmarked:,} sample(s) carry no tokenizer identity (made before rpt recorded it, or by "
                f"hand): their boundaries are taken to be token ends of the policy's tokenizer "
                f"{self.policy}, unchecked"
            )
        for made_with, count in self.rederived.items():
            out.append(
                f"{count:,} sample(s) were made with tokenizer {made_with}, not the policy's {self.policy}: "
                f"their boundaries were re-derived from context and target with the policy's tokenizer"
            )
        return out

    def as_fields(self) -> dict:
        return {
            **self.policy.as_field(),
            "samples_unmarked": self.unmarked,
            "samples_rederived": sum(self.rederived.values()),
            "samples_skipped": self.skipped,
        }


def align(
    entries: Sequence[tuple[int | None, dict]], policy: PolicyTokenizer, source: str, *, stats: ReadStats | None = None
) -> tuple[list[tuple[int, ...] | None], Alignment]:
    """For each (line, sample): None when its boundaries stand, else the policy's boundaries.

    A sample whose boundaries cannot be re-derived is an InputError (file and line, both
    tokenizers); with `stats` (`--skip-bad`) it is skipped instead, recorded in `stats.skipped`
    and left out of the result: the result then lists only the samples kept, with
    `Alignment.kept` holding their indices."""
    alignment = Alignment(policy.identity)
    found: list[tuple[int, ...] | None] = [None] * len(entries)
    dropped: set[int] = set()
    pending: list[tuple[int, TokenizerIdentity]] = []
    for index, (line, record) in enumerate(entries):
        try:
            made_with = recorded_identity(record)
        except RecordError as exc:
            raise InputError(source, line, str(exc)) from None
        if made_with is None:
            alignment.unmarked += 1
        elif made_with.fingerprint != policy.identity.fingerprint:
            pending.append((index, made_with))
    for start in range(0, len(pending), CHUNK):
        chunk = pending[start : start + CHUNK]
        records = [entries[i][1] for i, _ in chunk]
        usable = [isinstance(r.get("context"), str) for r in records]
        derived = iter(
            policy.rederive(
                [r["context"] for r, ok in zip(records, usable) if ok],
                [r["target"] for r, ok in zip(records, usable) if ok],
            )
        )
        for (index, made_with), ok in zip(chunk, usable):
            boundaries = next(derived) if ok else 'it has no "context" to re-derive them from'
            if isinstance(boundaries, str):
                message = cannot_rederive(policy, made_with, boundaries)
                if stats is None:
                    raise InputError(
                        source, entries[index][0], f"{message}, or pass --skip-bad to leave such samples out"
                    )
                stats.skipped.append((source, entries[index][0], message))
                dropped.add(index)
                continue
            found[index] = boundaries
            alignment.rederived[made_with] += 1
    alignment.kept = [i for i in range(len(entries)) if i not in dropped]
    alignment.skipped = len(dropped)
    return [found[i] for i in alignment.kept], alignment


def aligned_records(
    numbered: Iterable[tuple[int, dict]],
    policy: PolicyTokenizer,
    source: str,
    *,
    stats: ReadStats | None = None,
    alignment: Alignment | None = None,
) -> Iterator[tuple[int, dict]]:
    """`align` for a stream of (line, record) pairs, `CHUNK` at a time (`rpt reward`). A record
    whose boundaries are re-derived gets the policy's `boundaries` and `tokenizer`, and keeps the
    ones it came with under `rederived_from`; counts add up in `alignment`."""
    total = alignment if alignment is not None else Alignment(policy.identity)
    chunk: list[tuple[int, dict]] = []

    def flush() -> Iterator[tuple[int, dict]]:
        found, part = align(chunk, policy, source, stats=stats)
        total.unmarked += part.unmarked
        total.rederived.update(part.rederived)
        total.skipped += part.skipped
        for index, boundaries in zip(part.kept, found):
            line, record = chunk[index]
            if boundaries is not None:
                record["rederived_from"] = {"tokenizer": record[FIELD], "boundaries": record["boundaries"]}
                record["boundaries"] = list(boundaries)
                record[FIELD] = policy.identity.as_field()
            yield line, record
        chunk.clear()

    for pair in numbered:
        chunk.append(pair)
        if len(chunk) >= CHUNK:
            yield from flush()
    if chunk:
        yield from flush()


@dataclass
class RolloutPolicies:
    """`rpt reward`'s check of each rollout against the policy that made it (`rollout.tokenizer`).

    With `model` (the policy's tokenizer from `--model`), a rollout made by a policy with another
    tokenizer is an input error (the rollout would be judged by another model's tokens); the
    samples are then aligned with `model` by `aligned_records`, as `rpt train` and `rpt eval` align
    theirs. Without it, a sample made with another tokenizer than the rollout's policy's is an
    input error that names the `--model` to pass so its boundaries are re-derived; samples without
    an identity are counted in `alignment`, as unchecked. With `stats` (`--skip-bad`) a refused
    rollout is skipped and recorded there instead."""

    source: str
    model: PolicyTokenizer | None = None
    alignment: Alignment | None = None
    stats: ReadStats | None = None

    def __call__(self, numbered: Iterable[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
        for line, record in numbered:
            try:
                made_by = rollout_identity(record)
                made_with = recorded_identity(record)
                if made_by is not None:
                    self._check(line, record, made_by, made_with)
            except RecordError as exc:
                raise InputError(self.source, line, str(exc)) from None
            except InputError as exc:
                if self.stats is None:
                    raise
                self.stats.skipped.append((self.source, line, exc.reason))
                continue
            yield line, record

    def _check(self, line: int, record: dict, made_by: TokenizerIdentity, made_with: TokenizerIdentity | None) -> None:
        if self.model is not None:
            if made_by.fingerprint != self.model.identity.fingerprint:
                raise InputError(
                    self.source,
                    line,
                    f"this rollout was made by a policy with tokenizer {made_by}, but --model {self.model.spec} has "
                    f"tokenizer {self.model.identity}; pass the model that made the rollouts as --model",
                )
            return
        if self.alignment is None:
            self.alignment = Alignment(made_by)
        if made_with is None:
            self.alignment.unmarked += 1
        elif made_with.fingerprint != made_by.fingerprint:
            model = record["rollout"].get("model")
            model = model if isinstance(model, str) else made_by.name
            raise InputError(
                self.source,
                line,
                f"this sample's boundaries were made with tokenizer {made_with}, not with the tokenizer {made_by} "
                f"of the policy that made the rollout; pass --model {model} "
                f"to re-derive them with the policy's tokenizer, or make the samples with it "
                f"(rpt entropy --model ... | rpt filter ...)",
            )


def cannot_rederive(policy: PolicyTokenizer, made_with: TokenizerIdentity, reason: str) -> str:
    return (
        f"this sample's boundaries were made with tokenizer {made_with} and cannot be re-derived with the "
        f"policy's tokenizer {policy.identity}: {reason}; make the samples with the policy's tokenizer "
        f"(rpt entropy --model {policy.spec} ... | rpt filter ...)"
    )


__all__ = [
    "Alignment",
    "FIELD",
    "PolicyTokenizer",
    "RolloutPolicies",
    "TokenizerIdentity",
    "align",
    "aligned_records",
    "cannot_rederive",
    "check_identity_field",
    "fingerprint",
    "identity_of",
    "recorded_identity",
    "rollout_identity",
]
