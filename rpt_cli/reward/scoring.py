"""Scoring rollout records (records.md §4 to §5) and the group metrics of a run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rpt_cli.answers import ANSWER_FORMATS, DEFAULT_ANSWER, recorded_answer
from rpt_cli.errors import RecordError
from rpt_cli.records import check_completions, completion_data
from rpt_cli.records import rollout as rollout_record
from rpt_cli.reward.functions import Group, GroupScores, RewardFunction
from rpt_cli.reward.truth import sample_of

# --------------------------------------------------------------------------------------------
# Rollout records and group metrics
# --------------------------------------------------------------------------------------------


@dataclass
class RewardStats:
    """Running totals over scored groups (one group = one rollout record).

    - mean reward: over all completions;
    - no-prediction share: completions from which no answer could be extracted;
    - accuracy: share of correct completions (the paper's Random@1 in expectation);
    - pass@G: share of groups with at least one correct completion;
    - tied groups: groups whose G rewards are all equal, which give GRPO no gradient.
    """

    groups: int = 0
    completions: int = 0
    reward_sum: float = 0.0
    correct: int = 0
    no_prediction: int = 0
    solved_groups: int = 0
    tied_groups: int = 0
    group_sizes: set[int] = field(default_factory=set)

    def add(self, predictions: Sequence[str | None], scores: GroupScores) -> None:
        self.groups += 1
        self.completions += len(predictions)
        self.group_sizes.add(len(predictions))
        self.reward_sum += sum(scores.rewards)
        hits = sum(scores.correct)
        self.correct += hits
        self.solved_groups += hits > 0
        self.no_prediction += sum(p is None for p in predictions)
        self.tied_groups += len(set(scores.rewards)) <= 1

    @property
    def mean_reward(self) -> float:
        return self.reward_sum / self.completions if self.completions else 0.0

    @property
    def no_prediction_share(self) -> float:
        return self.no_prediction / self.completions if self.completions else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.completions if self.completions else 0.0

    @property
    def pass_at_g(self) -> float:
        return self.solved_groups / self.groups if self.groups else 0.0

    @property
    def g_label(self) -> str:
        return f"pass@{next(iter(self.group_sizes))}" if len(self.group_sizes) == 1 else "pass@G"

    def as_dict(self) -> dict:
        return {
            "groups": self.groups,
            "completions": self.completions,
            "mean_reward": self.mean_reward,
            "no_prediction_share": self.no_prediction_share,
            "accuracy": self.accuracy,
            "pass_at_g": self.pass_at_g,
            "tied_groups": self.tied_groups,
        }


def score_rollouts(
    records: Iterable[dict], reward_fn: RewardFunction, *, stats: RewardStats | None = None, notes: dict | None = None
) -> Iterator[dict]:
    """Scored rollouts (records.md §5) from rollouts (§4): each record gains `predictions`,
    `rewards` and `reward_fn`, plus `reward_options` when settings other than the defaults apply
    (with `notes` such as the model's name merged in); every other field passes through. Records
    are scored `reward_fn.batch_records` at a time, so model-based variants batch their forward
    passes. Raises RecordError on a malformed record."""
    stats = stats if stats is not None else RewardStats()
    need_context = reward_fn.needs_context
    batch: list[dict] = []
    groups: list[Group] = []

    def flush() -> Iterator[dict]:
        # read here, not up front: `answer_checked` may set the format from the first record
        options = {**reward_fn.options(), **(notes or {})}
        for record, group, scores in zip(batch, groups, reward_fn.score_groups(groups)):
            stats.add(group.predictions, scores)
            record["predictions"] = prediction_texts(group.predictions)
            record["rewards"] = scores.rewards
            record["reward_fn"] = reward_fn.name
            if options:
                record["reward_options"] = options
            yield record
        batch.clear()
        groups.clear()

    for record in records:
        if "completions" not in record:
            raise RecordError('missing field "completions" (is this the output of rpt rollout?)')
        check_completions(record["completions"])
        sample = sample_of(record, need_context=need_context)
        batch.append(record)
        groups.append(Group(sample, record_predictions(reward_fn, record)))
        if len(batch) >= reward_fn.batch_records:
            yield from flush()
    if batch:
        yield from flush()


def record_predictions(reward_fn: RewardFunction, record: dict) -> list[str | bytes | None]:
    """The prediction of each completion of a rollout record: in the direct format the exact
    bytes the model wrote (`completion_bytes` where the text cannot hold them, records.md §4)."""
    return [reward_fn.extract(c, data) for c, data in zip(record["completions"], completion_data(record))]


def prediction_texts(predictions: Sequence[str | bytes | None]) -> list[str | None]:
    """Predictions as records show them: text (bytes that are part of a character as U+FFFD)."""
    return [p.decode("utf-8", "replace") if isinstance(p, bytes) else p for p in predictions]


def answer_checked(
    numbered: Iterable[tuple[int, dict]], reward_fn: RewardFunction, *, given: str | None, source: str
) -> Iterator[dict]:
    """Rollout records from (line, record) pairs, each checked against the answer format it says
    it was made in (`rollout.answer`, written by `rpt rollout`), so rollouts of one format are
    never scored in the other, which would give every completion 0 without a word.

    The format is `given` (the user's `--answer`), else what the first record says, else boxed;
    it is set on `reward_fn` before any record is scored. A record made in another format is an
    input error naming its line; records that say nothing are taken in the chosen format."""
    from rpt_cli.errors import InputError

    chosen = None
    for lineno, record in numbered:
        made = recorded_answer(record)
        if made is not None and made not in ANSWER_FORMATS:
            raise InputError(source, lineno, f'"rollout.answer" is {made!r}: expected {" or ".join(ANSWER_FORMATS)}')
        if chosen is None:
            chosen = given or made or DEFAULT_ANSWER
            reward_fn.answer = chosen
        if made is not None and made != chosen:
            why = f"--answer {given}" if given else "the format of the rollouts before it"
            hint = (
                "drop --answer to score each rollout in the format it was made in"
                if given
                else "score the two formats separately"
            )
            raise InputError(
                source,
                lineno,
                f"this rollout was made in the {made} answer format but is scored in "
                f"the {chosen} format ({why}); {hint}",
            )
        yield record


def rollout_validator(reward_fn: RewardFunction | type[RewardFunction]) -> Callable[[dict], None]:
    """A `read_records` validator for rollouts (records.md §4) as `reward_fn` needs them (a class
    will do, so input can be checked before a model is loaded)."""
    return rollout_record(need_context=reward_fn.needs_context)
