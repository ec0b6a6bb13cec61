"""The checks of every record that flows between the stages, one per section of docs/records.md.

Each is a `read_records` validator: it raises RecordError naming the field, and the reader adds the
file and line. The stages import their checks from here instead of from each other. Light on
purpose: no torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rpt_cli.errors import RecordError

Validator = Callable[[dict], None]
DOC_ONLY_FIELDS = ("offsets", "entropy")  # what rpt entropy adds and rpt filter replaces


def _check_id(record: dict, id_field: str) -> None:
    value = record.get(id_field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
        raise RecordError(f'field "{id_field}" must be a string or an integer')


# Entropy in nats of a distribution over n outcomes is at most ln n; no vocabulary has 2^64 tokens.
MAX_ENTROPY = 64 * 0.6931471805599453


def is_entropy(value) -> bool:
    """A number an entropy can be: finite, between 0 and MAX_ENTROPY nats."""
    return type(value) in (float, int) and 0 <= value <= MAX_ENTROPY


def _check_split(record: dict) -> None:
    """A `split` label, when present, names one of the splits (records.md §3)."""
    from rpt_cli.filter import SPLIT_NAMES

    split = record.get("split")
    if split is not None and split not in (*SPLIT_NAMES, "none"):
        raise RecordError(f'field "split" is {split!r}: expected one of {", ".join(SPLIT_NAMES)} or none')


def check_tokenizer_field(record: dict) -> None:
    """A `tokenizer` field (whose tokens the offsets or boundaries are), when present, is well formed."""
    from rpt_cli.boundaries import recorded_identity

    recorded_identity(record)


# -- §1 corpus document (input of rpt entropy) ---------------------------------------------------


def corpus_document(text_field: str = "text", id_field: str = "id") -> Validator:
    def validate(record: dict) -> None:
        if text_field not in record:
            raise RecordError(f'missing field "{text_field}"')
        if not isinstance(record[text_field], str):
            raise RecordError(f'field "{text_field}" must be a string, got {type(record[text_field]).__name__}')
        _check_id(record, id_field)
        try:
            record[text_field].encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f'field "{text_field}" holds an unpaired surrogate (not valid UTF-8 text)') from None

    return validate


# -- §2 scored document (output of rpt entropy, input of rpt filter) -----------------------------


def scored_document(text_field: str = "text", id_field: str = "id") -> Validator:
    def validate(doc: dict) -> None:
        text = doc.get(text_field)
        if not isinstance(text, str):
            raise RecordError(
                f'missing field "{text_field}"' if text_field not in doc else f'field "{text_field}" must be a string'
            )
        for name in DOC_ONLY_FIELDS:
            if name not in doc:
                raise RecordError(f'missing field "{name}" (is this the output of rpt entropy?)')
            if not isinstance(doc[name], list):
                raise RecordError(f'field "{name}" must be a list')
        offsets, entropy = doc["offsets"], doc["entropy"]
        _check_id(doc, id_field)
        if len(offsets) != len(entropy) + 1:
            raise RecordError(
                f'"offsets" must have one more entry than "entropy" ({len(offsets)} offsets, {len(entropy)} entropies)'
            )
        if any(type(o) is not int for o in offsets):
            raise RecordError('"offsets" must hold integers')
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise RecordError(f'field "{text_field}" holds an unpaired surrogate') from None
        if offsets[0] != 0 or offsets[-1] != size:
            raise RecordError(
                f"offsets do not fit the text: they must run from 0 to its UTF-8 length "
                f"{size}, got {offsets[0]}..{offsets[-1]}"
            )
        if any(b <= a for a, b in zip(offsets, offsets[1:])):
            raise RecordError('"offsets" must be strictly increasing')
        check_tokenizer_field(doc)
        for value in entropy:
            if value is not None and not is_entropy(value):
                raise RecordError(f'"entropy" must hold numbers of nats from 0 to {MAX_ENTROPY:.1f}, or null')

    return validate


# -- §3 sample (output of rpt filter) ------------------------------------------------------------


def sample_context(record: dict) -> None:
    """A sample as `rpt rollout` needs it: its context, as a string; other fields pass through."""
    if "context" not in record:
        raise RecordError('missing field "context"')
    if not isinstance(record["context"], str):
        raise RecordError(f'field "context" must be a string, not {type(record["context"]).__name__}')


def training_sample(record: dict) -> None:
    """A sample as `rpt train` needs it: context, target and boundaries as the reward reads them."""
    from rpt_cli.reward.truth import sample_of

    sample_context(record)
    sample_of(record)
    _check_id(record, "id")
    check_tokenizer_field(record)


def evaluation_sample(record: dict) -> None:
    """A sample as `rpt eval` needs it: context, target, boundaries, and `entropy` (or, without it,
    a `split` label) to place it in the splits."""
    from rpt_cli.filter import SPLIT_NAMES
    from rpt_cli.reward.truth import make_sample

    sample_context(record)
    for name in ("target", "boundaries"):
        if name not in record:
            raise RecordError(f'missing field "{name}" (is this the output of rpt filter?)')
    make_sample(record["target"], record["boundaries"], record["context"], need_context=True)
    entropy = record.get("entropy")
    if entropy is None:
        if record.get("split") not in (*SPLIT_NAMES, "none"):
            raise RecordError('missing field "entropy" (the splits are by entropy; is this the output of rpt filter?)')
    elif not is_entropy(entropy):
        raise RecordError(f'field "entropy" must be a number of nats from 0 to {MAX_ENTROPY:.1f}, got {entropy!r}')
    _check_split(record)
    check_tokenizer_field(record)


# -- §4 rollout (output of rpt rollout, input of rpt reward) -------------------------------------


def check_completions(completions: Any) -> list:
    if not isinstance(completions, list):
        raise RecordError('field "completions" must be a list of strings')
    if not completions:
        raise RecordError('field "completions" must not be empty')
    for i, completion in enumerate(completions):
        if not isinstance(completion, (str, list)):
            raise RecordError(
                f'"completions[{i}]" must be a string (or a list of chat messages), got {type(completion).__name__}'
            )
    return completions


COMPLETION_BYTES = "completion_bytes"


def check_rollout_tokenizer(record: dict) -> None:
    """A rollout's `rollout.tokenizer` (the policy's tokenizer), when present, is well formed."""
    from rpt_cli.boundaries import rollout_identity

    rollout_identity(record)


def completion_bytes_field(completions: list) -> list | None:
    """A rollout's `completion_bytes` (records.md §4) for its completions (`generation.Completion`):
    the exact bytes of each one that its text does not hold (a token that is part of a UTF-8
    character, which the text shows as U+FFFD), in base64, null for the others; None (no field)
    when every text is exact."""
    import base64

    entries = [
        None
        if c.data is None or c.data == c.text.encode("utf-8", "surrogatepass")
        else base64.b64encode(c.data).decode("ascii")
        for c in completions
    ]
    return entries if any(entry is not None for entry in entries) else None


def completion_data(record: dict) -> list[bytes | None]:
    """The exact bytes of each completion that `completion_bytes` gives (None where the text is
    exact); RecordError naming the field when it is malformed."""
    import base64
    import binascii

    count = len(record["completions"])
    value = record.get(COMPLETION_BYTES)
    if value is None:
        return [None] * count
    if not isinstance(value, list) or len(value) != count:
        raise RecordError(f'field "{COMPLETION_BYTES}" must be a list with one entry per completion ({count})')
    out: list[bytes | None] = []
    for i, entry in enumerate(value):
        if entry is None:
            out.append(None)
            continue
        if not isinstance(entry, str):
            raise RecordError(f'"{COMPLETION_BYTES}[{i}]" must be null or a base64 string')
        try:
            out.append(base64.b64decode(entry, validate=True))
        except (binascii.Error, ValueError):
            raise RecordError(f'"{COMPLETION_BYTES}[{i}]" is not valid base64') from None
    return out


def rollout(need_context: bool = False) -> Validator:
    """A rollout as a reward function needs it (`need_context` for the dense variants)."""
    from rpt_cli.reward.truth import sample_of

    def validate(record: dict) -> None:
        if "completions" not in record:
            raise RecordError('missing field "completions" (is this the output of rpt rollout?)')
        check_completions(record["completions"])
        completion_data(record)
        sample_of(record, need_context=need_context)
        check_tokenizer_field(record)
        check_rollout_tokenizer(record)
        _check_rollout_settings(record)

    return validate


def _check_rollout_settings(record: dict) -> None:
    """`rollout`, when present, is an object, and its `answer` one of the formats (records.md §4)."""
    from rpt_cli.answers import ANSWER_FORMATS

    meta = record.get("rollout")
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise RecordError(f'field "rollout" must be an object, got {type(meta).__name__}')
    if "answer" in meta and meta["answer"] not in ANSWER_FORMATS:
        raise RecordError(f'"rollout.answer" is {meta["answer"]!r}: expected {" or ".join(ANSWER_FORMATS)}')


def completions_record(record: dict) -> None:
    """A record whose completions `rpt patterns` counts: a rollout (§4) or an `rpt eval --details`
    row of reasoning mode; an ntp row of `--details` (no completions) passes and is left out."""
    if record.get("mode") == "ntp" and "completions" not in record:
        return
    if "completions" not in record:
        raise RecordError('missing field "completions" (is this the output of rpt rollout or rpt eval --details?)')
    check_completions(record["completions"])
    split = record.get("split")
    if split is not None and not isinstance(split, str):
        raise RecordError(f'field "split" must be a string, got {type(split).__name__}')
    _check_split(record)


# -- §6 evaluation report (output of rpt eval, input of rpt scaling) -----------------------------


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def report(record: dict) -> None:
    if not isinstance(record.get("splits"), dict):
        raise RecordError('missing field "splits" (is this a report of rpt eval?)')
    if record.get("mode") not in ("ntp", "reasoning", "gain"):
        raise RecordError('field "mode" must be ntp, reasoning or gain (is this a report of rpt eval?)')
    for name, entry in record["splits"].items():
        if not isinstance(entry, dict) or not (entry.get("accuracy") is None or is_number(entry.get("accuracy"))):
            raise RecordError(f'"splits.{name}.accuracy" must be a number or null')
        if entry["accuracy"] is not None and not 0 <= entry["accuracy"] <= 1:
            raise RecordError(f'"splits.{name}.accuracy" is {entry["accuracy"]}: an accuracy lies between 0 and 1')


__all__ = [
    "DOC_ONLY_FIELDS",
    "check_completions",
    "check_tokenizer_field",
    "completions_record",
    "corpus_document",
    "evaluation_sample",
    "report",
    "rollout",
    "sample_context",
    "scored_document",
    "training_sample",
]
