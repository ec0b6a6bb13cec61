"""The ground truth a completion is scored against (a sample's `target` and `boundaries`), checked once, and Eq. 3."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rpt_cli.errors import RecordError

# --------------------------------------------------------------------------------------------
# Eq. 3
# --------------------------------------------------------------------------------------------


def prefix_match(prediction: str | bytes | None, target: str, boundaries: Sequence[int]) -> float:
    """Eq. 3: 1.0 iff the prediction's UTF-8 bytes equal the first l bytes of `target` and l is
    one of `boundaries`; else 0.0.

    So a prediction may cover one or several whole ground-truth tokens, never part of one; an
    empty or missing prediction, one longer than the target, and one that cannot be encoded
    (an unpaired surrogate) all score 0.0. Whitespace is significant. A prediction given as bytes
    (a token's exact bytes, which may be part of a character) is compared as it is.
    """
    if not prediction:
        return 0.0
    try:
        predicted = prediction if isinstance(prediction, bytes) else prediction.encode("utf-8")
        truth = target.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        return 0.0
    if len(predicted) not in boundaries:
        return 0.0
    return 1.0 if truth.startswith(predicted) else 0.0


def _prefix_correct(prediction: str | bytes | None, sample: Sample) -> bool:
    # the hot path of Eq. 3: the sample's bytes and boundary set are computed once per group
    if not prediction:
        return False
    try:
        predicted = prediction if isinstance(prediction, bytes) else prediction.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(predicted) in sample.boundary_set and sample.target_bytes.startswith(predicted)


# --------------------------------------------------------------------------------------------
# Samples and their validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sample:
    """What a completion is scored against (records.md §3), checked once per group."""

    target: str
    boundaries: tuple[int, ...]
    context: str | None
    target_bytes: bytes
    boundary_set: frozenset[int]


def make_sample(target: Any, boundaries: Any, context: Any = None, *, need_context: bool = False) -> Sample:
    """Check a sample's fields and precompute its bytes; raises RecordError naming the problem.

    Boundaries may fall inside a multi-byte character: byte-level tokenizers split characters
    across tokens, and `rpt filter` then lists those token boundaries faithfully. No prediction
    (always whole characters) can end there, so they are simply unreachable, not an error.
    """
    if not isinstance(target, str):
        raise RecordError('field "target" must be a string')
    if not target:
        raise RecordError('field "target" must not be empty')
    try:
        target_bytes = target.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(
            'field "target" holds an unpaired surrogate (a character cut in half), '
            "so it has no UTF-8 bytes to compare with"
        ) from None
    if not isinstance(boundaries, (list, tuple)):
        raise RecordError('field "boundaries" must be a list of byte lengths')
    if not boundaries:
        raise RecordError('field "boundaries" must not be empty (it lists the byte length of the next token first)')
    previous = 0
    for value in boundaries:
        if type(value) is not int:
            raise RecordError(f'"boundaries" must hold integers, got {value!r}')
        if value <= 0:
            raise RecordError(f'"boundaries" must be positive byte lengths, got {value}')
        if value <= previous:
            raise RecordError(f'"boundaries" must be strictly increasing, got {previous} then {value}')
        previous = value
    if previous > len(target_bytes):
        raise RecordError(f"boundary {previous} exceeds the target, which is {len(target_bytes)} UTF-8 bytes long")
    if need_context:
        if not isinstance(context, str):
            raise RecordError('missing field "context"' if context is None else 'field "context" must be a string')
        if not _encodable(context):
            raise RecordError('field "context" holds an unpaired surrogate')
    return Sample(
        target, tuple(boundaries), context if isinstance(context, str) else None, target_bytes, frozenset(boundaries)
    )


def sample_of(record: dict, *, need_context: bool = False) -> Sample:
    for name in ("target", "boundaries"):
        if name not in record:
            raise RecordError(f'missing field "{name}" (is this a rollout of rpt rollout?)')
    if need_context and "context" not in record:
        raise RecordError('missing field "context" (the dense rewards need it)')
    return make_sample(record["target"], record["boundaries"], record.get("context"), need_context=need_context)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
