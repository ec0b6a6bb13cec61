"""The reward functions (Eq. 3 and the Appendix A variants), one registry for `rpt reward`, training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from rpt_cli.answers import ANSWER_FORMATS, DEFAULT_ANSWER, DIRECT
from rpt_cli.errors import RecordError
from rpt_cli.reward.extract import completion_text, extract_prediction
from rpt_cli.reward.model import FirstTokenProbability, FirstTokens
from rpt_cli.reward.truth import Sample, _prefix_correct, make_sample

# --------------------------------------------------------------------------------------------
# Reward functions
# --------------------------------------------------------------------------------------------


@dataclass
class Group:
    """One sample and the predictions extracted from its G completions."""

    sample: Sample
    predictions: list[str | bytes | None]  # bytes: a direct answer's exact bytes


class GroupScores(NamedTuple):
    rewards: list[float]
    correct: list[bool]


class RewardFunction:
    """Base of every reward function in the registry.

    Three ways in, one scoring core (`score_groups`):
    - `fn(completions, **columns)`: the TRL reward-function signature. Columns `target` and
      `boundaries` (and `context` for the dense variants) are lists aligned with `completions`;
      other keyword arguments (prompts, completion_ids, trainer_state, unknown columns) are
      ignored. Consecutive completions with the same sample form a group (TRL lays out the G
      generations of a prompt next to each other).
    - `score_record(record)`: one rollout record (records.md §4 → §5).
    - `score_groups(groups)`: predictions already extracted, grouped by sample.
    """

    name: ClassVar[str]
    needs_context: ClassVar[bool] = False
    # rollout records scored per call; >1 only where batching pays (forward passes)
    batch_records: ClassVar[int] = 1

    def __init__(self, *, require_think: bool = True, answer: str = DEFAULT_ANSWER):
        if answer not in ANSWER_FORMATS:
            raise ValueError(f"answer={answer!r}: choose one of {', '.join(ANSWER_FORMATS)}")
        self.require_think = require_think
        # the answer format (answers.py): where a completion's prediction is
        self.answer = answer
        # token bytes of the policy's tokenizer (`read_generated_ids`), for TRL's completion_ids
        self.token_table: list[bytes | None] | None = None
        # TRL names a reward function after `__name__` in its logs
        self.__name__ = self.name.replace("-", "_") + "_reward"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(answer={self.answer!r}, require_think={self.require_think})"

    def options(self) -> dict:
        """Settings that change the scores beyond the name, for the record (`reward_options`)."""
        if self.answer == DIRECT:
            return {"answer": DIRECT}  # no box to look for, so require_think means nothing
        return {} if self.require_think else {"require_think": False}

    def extract(self, completion: Any, data: bytes | None = None) -> str | bytes | None:
        """The prediction in a completion: the last box (boxed format) or the whole completion
        (direct format, nothing stripped); None when there is none (an empty completion in the
        direct format: the model ended at once). In the direct format, `data` (the completion's
        exact bytes, when known) is the prediction: a token that is part of a UTF-8 character
        scores by its bytes, as in `rpt eval --mode ntp`, not as the U+FFFD of its text."""
        if self.answer == DIRECT:
            if data is not None:
                return data or None
            return completion_text(completion) or None
        return extract_prediction(completion_text(completion), require_think=self.require_think)

    def read_generated_ids(self, tokenizer) -> None:
        """Score TRL's completions by the bytes of their `completion_ids` in this tokenizer (the
        policy's): TRL's texts come from `batch_decode`, which drops the space of a
        SentencePiece word-initial token and turns part of a character into U+FFFD."""
        from rpt_cli.tokens import token_byte_table

        self.token_table = token_byte_table(tokenizer)

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        raise NotImplementedError

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        count = len(completions)
        targets = _column(columns, "target", count)
        boundaries = _column(columns, "boundaries", count)
        contexts = _column(columns, "context", count) if self.needs_context else None
        predictions = self._trl_predictions(completions, columns.get("completion_ids"))
        groups: list[Group] = []
        previous_key = None
        for i, prediction in enumerate(predictions):
            key = (targets[i], boundaries[i], contexts[i] if contexts is not None else None)
            if groups and key == previous_key:
                groups[-1].predictions.append(prediction)
                continue
            try:
                sample = make_sample(*key, need_context=self.needs_context)
            except RecordError as exc:
                raise RecordError(f"completion {i}: {exc}") from None
            groups.append(Group(sample, [prediction]))
            previous_key = key
        return [reward for scores in self.score_groups(groups) for reward in scores.rewards]

    def _trl_predictions(self, completions: Sequence[Any], completion_ids: Any) -> list[str | bytes | None]:
        """The predictions of TRL's completions: from the exact bytes of their token ids when
        `read_generated_ids` gave a byte table (text completions; a conversation stays as TRL
        parsed it), else from TRL's texts."""
        table = self.token_table
        if table is None or not isinstance(completion_ids, (list, tuple)) or len(completion_ids) != len(completions):
            return [self.extract(completion) for completion in completions]
        from rpt_cli.tokens import generated_bytes

        out = []
        for completion, ids in zip(completions, completion_ids):
            if not isinstance(completion, str):
                out.append(self.extract(completion))
                continue
            data = generated_bytes(table, [int(i) for i in ids])
            out.append(self.extract(data.decode("utf-8", "replace"), data))
        return out

    def score_record(self, record: dict) -> dict:
        """Score one rollout record in place and return it (adds predictions, rewards, reward_fn)."""
        from rpt_cli.reward.scoring import score_rollouts

        return next(iter(score_rollouts([record], self)))


def _column(columns: dict, name: str, count: int) -> Sequence:
    if name not in columns:
        raise RecordError(f'missing column "{name}": pass the samples\' "{name}" field, one entry per completion')
    values = columns[name]
    if not isinstance(values, (list, tuple)):
        raise RecordError(f'column "{name}" must be a list with one entry per completion')
    if len(values) != count:
        raise RecordError(
            f'got {count} completions but {len(values)} values of "{name}" (each column needs one entry per completion)'
        )
    return values


class PrefixReward(RewardFunction):
    """`prefix` (Eq. 3, the paper's main reward). Correct = the prediction's bytes are a prefix of
    the target ending on a ground-truth token boundary; reward 1.0 if correct, else 0.0."""

    name = "prefix"

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        out = []
        for group in groups:
            sample = group.sample
            correct = [_prefix_correct(p, sample) for p in group.predictions]
            out.append(GroupScores([1.0 if ok else 0.0 for ok in correct], correct))
        return out


class FirstTokenReward(RewardFunction):
    """`first-token` (Appendix A.1). Correct = the first token of the prediction, tokenized on its
    own with the model's tokenizer, has exactly the bytes of the ground-truth next token (target
    bytes up to boundaries[0]); later tokens of the prediction are not looked at. Reward 1.0 if
    correct, else 0.0. Needs a tokenizer (`tokenizer=` or `first_tokens=`)."""

    name = "first-token"

    def __init__(
        self,
        *,
        tokenizer=None,
        first_tokens: FirstTokens | None = None,
        require_think: bool = True,
        answer: str = DEFAULT_ANSWER,
    ):
        super().__init__(require_think=require_think, answer=answer)
        if first_tokens is None:
            if tokenizer is None:
                raise ValueError(f"the {self.name!r} reward needs the model's tokenizer (tokenizer=...)")
            first_tokens = FirstTokens(tokenizer)
        self.first_tokens = first_tokens

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        correct = _first_token_correct(self.first_tokens, groups)
        return [GroupScores([1.0 if ok else 0.0 for ok in flags], flags) for flags in correct]


def _first_token_correct(first_tokens: FirstTokens, groups: Sequence[Group]) -> list[list[bool]]:
    firsts = iter(first_tokens([p for g in groups for p in g.predictions]))
    out = []
    for group in groups:
        next_token = group.sample.target_bytes[: group.sample.boundaries[0]]
        out.append(
            [(first is not None and first[1] == next_token) for first in (next(firsts) for _ in group.predictions)]
        )
    return out


CORRECTNESS_RULES = ("first-token", "prefix")


class DenseReward(RewardFunction):
    """`dense` (Appendix A.2). Reward 1.0 when correct, else P(y_0 | context): the model's
    probability of the prediction's first token given the sample's context (0.0 without a
    prediction). Correct follows `correct`: `first-token` (default, as in the paper's definition)
    or `prefix` (Eq. 3). Needs the samples' `context` and a model: `model=` and `tokenizer=`
    (plus `device=`), or a ready `probability=` (e.g. wrapping the live policy during training)."""

    name = "dense"
    needs_context = True
    batch_records = 32

    def __init__(
        self,
        *,
        model=None,
        tokenizer=None,
        device=None,
        probability: FirstTokenProbability | None = None,
        correct: str = "first-token",
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        require_think: bool = True,
        answer: str = DEFAULT_ANSWER,
    ):
        super().__init__(require_think=require_think, answer=answer)
        if correct not in CORRECTNESS_RULES:
            raise ValueError(f"correct={correct!r}: choose one of {', '.join(CORRECTNESS_RULES)}")
        if probability is None:
            if model is None or tokenizer is None:
                raise ValueError(
                    f"the {self.name!r} reward needs a model and its tokenizer "
                    "(model=..., tokenizer=...) or probability=..."
                )
            probability = FirstTokenProbability(
                model, tokenizer, device, batch_size=batch_size, max_context_tokens=max_context_tokens
            )
        self.probability = probability
        self.correct = correct

    def options(self) -> dict:
        return {**super().options(), "correct": self.correct}

    def _correct(self, groups: Sequence[Group]) -> list[list[bool]]:
        if self.correct == "prefix":
            return [[_prefix_correct(p, g.sample) for p in g.predictions] for g in groups]
        return _first_token_correct(self.probability.first_tokens, groups)

    def _dense(
        self,
        groups: Sequence[Group],
        correct: list[list[bool]],
        dense_groups: Sequence[bool],
        other_reward: float = 0.0,
    ) -> list[GroupScores]:
        # one probability per incorrect prediction of a group that gets dense rewards; the model
        # runs once per distinct context (the G completions of a group share theirs)
        pairs = [
            (g.sample.context, p)
            for g, flags, dense in zip(groups, correct, dense_groups)
            if dense
            for p, ok in zip(g.predictions, flags)
            if not ok and p
        ]
        probabilities = iter(self.probability(pairs) if pairs else [])
        out = []
        for g, flags, dense in zip(groups, correct, dense_groups):
            if dense:
                rewards = [1.0 if ok else (next(probabilities) if p else 0.0) for p, ok in zip(g.predictions, flags)]
            else:
                rewards = [other_reward] * len(flags)
            out.append(GroupScores(rewards, flags))
        return out

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        correct = self._correct(groups)
        return self._dense(groups, correct, [True] * len(groups))


class ConditionalDenseReward(DenseReward):
    """`conditional-dense` (Appendix A.3): the dense reward in groups where at least one of the G
    completions is correct (same `correct` rule as `dense`); every completion of the other groups
    gets `unsolved_reward` (default 0.0, or e.g. a small penalty)."""

    name = "conditional-dense"

    def __init__(self, *, unsolved_reward: float = 0.0, **options):
        super().__init__(**options)
        self.unsolved_reward = float(unsolved_reward)

    def options(self) -> dict:
        return {**super().options(), "unsolved_reward": self.unsolved_reward}

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        correct = self._correct(groups)
        return self._dense(groups, correct, [any(flags) for flags in correct], self.unsolved_reward)


REWARD_FUNCTIONS: dict[str, type[RewardFunction]] = {
    cls.name: cls for cls in (PrefixReward, FirstTokenReward, DenseReward, ConditionalDenseReward)
}
NEEDS_TOKENIZER = frozenset({"first-token"})
NEEDS_MODEL = frozenset({"dense", "conditional-dense"})


def get_reward_function(name: str, **options: Any) -> RewardFunction:
    """The reward function registered as `name`, built with `options`:

    - every variant: `answer` ("boxed", the default, or "direct": the whole completion is the
      prediction) and `require_think` (boxed only; default True; False takes the last box anywhere);
    - `first-token`: `tokenizer` (or `first_tokens`);
    - `dense`, `conditional-dense`: `model`, `tokenizer`, `device` (or `probability`),
      `correct` ("first-token" or "prefix"), `batch_size`, `max_context_tokens`;
    - `conditional-dense`: `unsolved_reward` (default 0.0).

    The result is a TRL reward function (`fn(completions, **columns) -> list[float]`) and scores
    rollout records (`score_rollouts`); training and evaluation both call this.
    """
    try:
        cls = REWARD_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown reward function {name!r}: choose one of {', '.join(REWARD_FUNCTIONS)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"reward function {name!r}: {exc}") from None


# TRL-ready default: `prefix_reward(completions, target=[...], boundaries=[...])`
prefix_reward = get_reward_function("prefix")
