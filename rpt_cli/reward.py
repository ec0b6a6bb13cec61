"""The verifiable reward of RPT (Eq. 3) and the paper's Appendix A variants.

One module serves `rpt reward`, training (as a TRL reward function) and evaluation, so all three
score alike. The main path is pure Python on strings and bytes: torch and transformers are imported
only inside the model-based pieces (`FirstTokens`, `FirstTokenProbability`), so `rpt reward` with
the default `prefix` function starts instantly.

Vocabulary used throughout:
- a *sample* is one position of a document: `target` (the ground-truth continuation) and
  `boundaries` (the UTF-8 byte lengths of its prefixes that end on a ground-truth token boundary,
  the set L_gt of Eq. 3), plus `context` for the dense variants;
- a *group* is one sample with the G completions rolled out for it;
- a completion is *correct* by the rule of the reward function at hand (see each class), and
  pass@G counts the groups with at least one correct completion.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from rpt_cli.answers import ANSWER_FORMATS, DEFAULT_ANSWER, DIRECT, recorded_answer
from rpt_cli.boundaries import check_identity_field
from rpt_cli.jsonl import RecordError

THINK_END = "</think>"
BOXED = "\\boxed"
# Inside a box, a backslash escapes the next character (so `\{` and `\}` are not braces, and `\\`
# is one escaped backslash); every other `{` or `}` nests. One regex finds the next token that
# matters, so the scan is linear and runs in C between them.
_BOX_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Answer extraction
# --------------------------------------------------------------------------------------------

def extract_prediction(completion: str, *, require_think: bool = True) -> str | None:
    """The full text inside the last `\\boxed{...}` after the last `</think>`, or None.

    - With `require_think` (the paper's format) a completion without `</think>` has no prediction,
      and boxes inside the thinking never count. Without it, the last box anywhere counts.
    - The last `\\boxed` decides: if it is not directly followed by `{`, no `}` follows it, or it
      is empty (`\\boxed{}`), there is no prediction. An earlier box is not used instead, since
      the model's final word was the malformed one.
    - Where the box ends: braces nest and a backslash escapes the next character (`\\{`, `\\}`
      and `\\\\` do not count), so `\\boxed{\\frac{1}{2}} and more` gives `\\frac{1}{2}`. But
      a next token is a piece of text, not balanced LaTeX (`1}{2` after `\\frac{`, a lone `\\`):
      when that nesting never closes the box, or a `}` follows its close that no group opened
      before the box accounts for, the box runs to the last `}` of the completion. So
      `\\boxed{\\}` gives `\\`, `\\boxed{1}{2}` gives `1}{2`, and `</think>\\boxed{P}` gives P
      for any P without `\\boxed` or `</think>` in it; a box nested in a box still gives the
      inner one (`\\boxed{a \\boxed{b} c}` gives `b`).
    - Nothing is stripped: `\\boxed{ para}` gives " para".

    Never raises on any `str` (lone surrogates included); anything else gives None. Linear time.
    """
    if not isinstance(completion, str):
        return None
    start = 0
    if require_think:
        think = completion.rfind(THINK_END)
        if think < 0:
            return None
        start = think + len(THINK_END)
    box = completion.rfind(BOXED, start)
    if box < 0:
        return None
    open_brace = box + len(BOXED)
    if not completion.startswith("{", open_brace):
        return None
    last = completion.rfind("}", open_brace + 1)
    if last < 0:
        return None  # the box was never closed
    close = _nested_close(completion, open_brace)
    if close is None:
        close = last
    elif close < last and completion.count("}", close + 1) > _open_groups(completion, start, box):
        close = last  # (the common case, a box that ends the answer, needs neither scan)
    return completion[open_brace + 1:close] or None


def _nested_close(text: str, open_brace: int) -> int | None:
    """Index of the `}` that closes the brace at `open_brace` by nesting and escapes, or None."""
    depth = 0
    for token in _BOX_TOKEN.finditer(text, open_brace):
        value = token.group()
        if value == "{":
            depth += 1
        elif value == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


def _open_groups(text: str, start: int, end: int) -> int:
    """Groups opened in text[start:end] and not closed there (an enclosing box, say)."""
    depth = 0
    for token in _BOX_TOKEN.finditer(text, start, end):
        value = token.group()
        if value == "{":
            depth += 1
        elif value == "}" and depth:
            depth -= 1
    return depth


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL passes it: a plain string, or a conversational list of
    message dicts. Only assistant messages count (a tool's output cannot smuggle in a box). When
    TRL has split a message into reasoning and content (`reasoning_content`, `thinking` or
    `reasoning`), the reasoning is put back inside `<think>...</think>` so that `require_think`
    means the same for both forms. Anything else gives "" (no prediction)."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else completion
    if not isinstance(messages, (list, tuple)):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        for key in ("reasoning_content", "thinking", "reasoning"):
            reasoning = message.get(key)
            if isinstance(reasoning, str) and reasoning:
                parts.append(f"<think>{reasoning}{THINK_END}")
                break
        parts.append(_content_text(message.get("content")))
    return "".join(parts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


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


def _prefix_correct(prediction: str | None, sample: Sample) -> bool:
    # the hot path of Eq. 3: the sample's bytes and boundary set are computed once per group
    if not prediction:
        return False
    try:
        predicted = prediction.encode("utf-8")
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
        raise RecordError('field "target" holds an unpaired surrogate (a character cut in half), '
                          'so it has no UTF-8 bytes to compare with') from None
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
        raise RecordError(f'boundary {previous} exceeds the target, which is {len(target_bytes)} UTF-8 bytes long')
    if need_context:
        if not isinstance(context, str):
            raise RecordError('missing field "context"' if context is None else 'field "context" must be a string')
        if not _encodable(context):
            raise RecordError('field "context" holds an unpaired surrogate')
    return Sample(target, tuple(boundaries), context if isinstance(context, str) else None,
                  target_bytes, frozenset(boundaries))


def sample_of(record: dict, *, need_context: bool = False) -> Sample:
    for name in ("target", "boundaries"):
        if name not in record:
            raise RecordError(f'missing field "{name}" (is this a rollout of rpt rollout?)')
    if need_context and "context" not in record:
        raise RecordError('missing field "context" (the dense rewards need it)')
    return make_sample(record["target"], record["boundaries"], record.get("context"),
                       need_context=need_context)


def check_completions(completions: Any) -> list:
    if not isinstance(completions, list):
        raise RecordError('field "completions" must be a list of strings')
    if not completions:
        raise RecordError('field "completions" must not be empty')
    for i, completion in enumerate(completions):
        if not isinstance(completion, (str, list)):
            raise RecordError(f'"completions[{i}]" must be a string (or a list of chat messages), '
                              f'got {type(completion).__name__}')
    return completions


def rollout_validator(reward_fn: RewardFunction | type[RewardFunction]) -> Callable[[dict], None]:
    """A `read_records` validator for rollouts (records.md §4) as `reward_fn` needs them (a class
    will do, so input can be checked before a model is loaded)."""
    need_context = reward_fn.needs_context

    def validate(record: dict) -> None:
        if "completions" not in record:
            raise RecordError('missing field "completions" (is this the output of rpt rollout?)')
        check_completions(record["completions"])
        sample_of(record, need_context=need_context)
        check_identity_field(record)
    return validate


# --------------------------------------------------------------------------------------------
# Reward functions
# --------------------------------------------------------------------------------------------

@dataclass
class Group:
    """One sample and the predictions extracted from its G completions."""

    sample: Sample
    predictions: list[str | None]


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
        # TRL names a reward function after `__name__` in its logs
        self.__name__ = self.name.replace("-", "_") + "_reward"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(answer={self.answer!r}, require_think={self.require_think})"

    def options(self) -> dict:
        """Settings that change the scores beyond the name, for the record (`reward_options`)."""
        if self.answer == DIRECT:
            return {"answer": DIRECT}  # no box to look for, so require_think means nothing
        return {} if self.require_think else {"require_think": False}

    def extract(self, completion: Any) -> str | None:
        """The prediction in a completion: the last box (boxed format) or the whole text (direct
        format, nothing stripped); None when there is none (an empty completion in the direct
        format: the model ended at once)."""
        text = completion_text(completion)
        if self.answer == DIRECT:
            return text or None
        return extract_prediction(text, require_think=self.require_think)

    def score_groups(self, groups: Sequence[Group]) -> list[GroupScores]:
        raise NotImplementedError

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        count = len(completions)
        targets = _column(columns, "target", count)
        boundaries = _column(columns, "boundaries", count)
        contexts = _column(columns, "context", count) if self.needs_context else None
        groups: list[Group] = []
        previous_key = None
        for i, completion in enumerate(completions):
            key = (targets[i], boundaries[i], contexts[i] if contexts is not None else None)
            if groups and key == previous_key:
                groups[-1].predictions.append(self.extract(completion))
                continue
            try:
                sample = make_sample(*key, need_context=self.needs_context)
            except RecordError as exc:
                raise RecordError(f"completion {i}: {exc}") from None
            groups.append(Group(sample, [self.extract(completion)]))
            previous_key = key
        return [reward for scores in self.score_groups(groups) for reward in scores.rewards]

    def score_record(self, record: dict) -> dict:
        """Score one rollout record in place and return it (adds predictions, rewards, reward_fn)."""
        return next(iter(score_rollouts([record], self)))


def _column(columns: dict, name: str, count: int) -> Sequence:
    if name not in columns:
        raise RecordError(f'missing column "{name}": pass the samples\' "{name}" field, one entry per completion')
    values = columns[name]
    if not isinstance(values, (list, tuple)):
        raise RecordError(f'column "{name}" must be a list with one entry per completion')
    if len(values) != count:
        raise RecordError(f'got {count} completions but {len(values)} values of "{name}" '
                          '(each column needs one entry per completion)')
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

    def __init__(self, *, tokenizer=None, first_tokens: FirstTokens | None = None, require_think: bool = True,
                 answer: str = DEFAULT_ANSWER):
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
        next_token = group.sample.target_bytes[:group.sample.boundaries[0]]
        out.append([(first is not None and first[1] == next_token)
                    for first in (next(firsts) for _ in group.predictions)])
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

    def __init__(self, *, model=None, tokenizer=None, device=None,
                 probability: FirstTokenProbability | None = None, correct: str = "first-token",
                 batch_size: int = 8, max_context_tokens: int | None = None, require_think: bool = True,
                 answer: str = DEFAULT_ANSWER):
        super().__init__(require_think=require_think, answer=answer)
        if correct not in CORRECTNESS_RULES:
            raise ValueError(f"correct={correct!r}: choose one of {', '.join(CORRECTNESS_RULES)}")
        if probability is None:
            if model is None or tokenizer is None:
                raise ValueError(f"the {self.name!r} reward needs a model and its tokenizer "
                                 "(model=..., tokenizer=...) or probability=...")
            probability = FirstTokenProbability(model, tokenizer, device, batch_size=batch_size,
                                                max_context_tokens=max_context_tokens)
        self.probability = probability
        self.correct = correct

    def options(self) -> dict:
        return {**super().options(), "correct": self.correct}

    def _correct(self, groups: Sequence[Group]) -> list[list[bool]]:
        if self.correct == "prefix":
            return [[_prefix_correct(p, g.sample) for p in g.predictions] for g in groups]
        return _first_token_correct(self.probability.first_tokens, groups)

    def _dense(self, groups: Sequence[Group], correct: list[list[bool]],
               dense_groups: Sequence[bool], other_reward: float = 0.0) -> list[GroupScores]:
        # one probability per incorrect prediction of a group that gets dense rewards; the model
        # runs once per distinct context (the G completions of a group share theirs)
        pairs = [(g.sample.context, p) for g, flags, dense in zip(groups, correct, dense_groups) if dense
                 for p, ok in zip(g.predictions, flags) if not ok and p]
        probabilities = iter(self.probability(pairs) if pairs else [])
        out = []
        for g, flags, dense in zip(groups, correct, dense_groups):
            if dense:
                rewards = [1.0 if ok else (next(probabilities) if p else 0.0)
                           for p, ok in zip(g.predictions, flags)]
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
        return {"groups": self.groups, "completions": self.completions, "mean_reward": self.mean_reward,
                "no_prediction_share": self.no_prediction_share, "accuracy": self.accuracy,
                "pass_at_g": self.pass_at_g, "tied_groups": self.tied_groups}


def score_rollouts(records: Iterable[dict], reward_fn: RewardFunction, *,
                   stats: RewardStats | None = None, notes: dict | None = None) -> Iterator[dict]:
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
            record["predictions"] = group.predictions
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
        completions = check_completions(record["completions"])
        sample = sample_of(record, need_context=need_context)
        batch.append(record)
        groups.append(Group(sample, [reward_fn.extract(c) for c in completions]))
        if len(batch) >= reward_fn.batch_records:
            yield from flush()
    if batch:
        yield from flush()


def answer_checked(numbered: Iterable[tuple[int, dict]], reward_fn: RewardFunction, *, given: str | None,
                   source: str) -> Iterator[dict]:
    """Rollout records from (line, record) pairs, each checked against the answer format it says
    it was made in (`rollout.answer`, written by `rpt rollout`), so rollouts of one format are
    never scored in the other, which would give every completion 0 without a word.

    The format is `given` (the user's `--answer`), else what the first record says, else boxed;
    it is set on `reward_fn` before any record is scored. A record made in another format is an
    input error naming its line; records that say nothing are taken in the chosen format."""
    from rpt_cli.jsonl import InputError

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
            hint = ("drop --answer to score each rollout in the format it was made in" if given else
                    "score the two formats separately")
            raise InputError(source, lineno, f"this rollout was made in the {made} answer format but is scored in "
                                             f"the {chosen} format ({why}); {hint}")
        yield record


# --------------------------------------------------------------------------------------------
# Model-based pieces (torch and transformers imported here only)
# --------------------------------------------------------------------------------------------

class FirstTokens:
    """The first token of each prediction in a tokenizer's own tokenization of the prediction
    alone, as (token id, exact bytes), or None when there is none (no prediction, an unpaired
    surrogate, or bytes the tokenizer cannot account for)."""

    def __init__(self, tokenizer, *, cache_size: int = 65536):
        from rpt_cli.tokens import DocTokenizer

        self.tokenizer = tokenizer
        self.doc_tokenizer = DocTokenizer(tokenizer)
        self._cache: dict[str, tuple[int, bytes] | None] = {}
        self._cache_size = cache_size

    def __call__(self, predictions: Sequence[str | None]) -> list[tuple[int, bytes] | None]:
        todo = sorted({p for p in predictions if p and p not in self._cache})
        if todo:
            if len(self._cache) + len(todo) > self._cache_size:
                self._cache.clear()
            for text in todo:
                self._cache[text] = None
            encodable = [t for t in todo if _encodable(t)]
            for text, first in zip(encodable, self._tokenize(encodable)):
                self._cache[text] = first
        return [self._cache.get(p) if p else None for p in predictions]

    def _tokenize(self, texts: list[str]) -> list[tuple[int, bytes] | None]:
        if not texts:
            return []
        try:
            docs = self.doc_tokenizer(texts)
        except RecordError:  # one odd text spoils a batch: retry one by one
            return [self._tokenize([t])[0] if len(texts) > 1 else None for t in texts]
        out = []
        for text, doc in zip(texts, docs):
            if not doc.ids or len(doc.offsets) < 2 or doc.dropped:
                out.append(None)
                continue
            data = text.encode("utf-8")
            out.append((doc.ids[0], data[doc.offsets[0]:doc.offsets[1]]))
        return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class FirstTokenProbability:
    """P(first token of the prediction | context) from a causal language model.

    Takes (model, tokenizer, device) so the training stage can pass the live policy. The context
    is tokenized like a document (the tokenizer's special prefix such as BOS, then its own tokens,
    cut from the left to `max_context_tokens`), each distinct context runs through the model once,
    `batch_size` contexts per forward pass (left padded, explicit positions), and the softmax of
    the last position is read at the prediction's first token id. The model's train/eval mode is
    left as it is; gradients are off.
    """

    def __init__(self, model, tokenizer, device=None, *, batch_size: int = 8,
                 max_context_tokens: int | None = None, first_tokens: FirstTokens | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.device = device if device is not None else next(model.parameters()).device
        self.batch_size = batch_size
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_context_tokens = max_context_tokens or limit or 4096
        self.first_tokens = first_tokens or FirstTokens(tokenizer)
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)

    def context_ids(self, context: str) -> list[int]:
        doc_tokenizer = self.first_tokens.doc_tokenizer
        doc = doc_tokenizer([context])[0] if context else None
        prefix = list(doc_tokenizer.prefix) + (list(getattr(doc, "lead", [])) if doc else [])
        ids = prefix + (list(doc.ids) if doc else [])
        if not ids:  # no context and no BOS: start from whatever begins a text
            fallback = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None \
                else self.tokenizer.eos_token_id
            ids = [fallback] if fallback is not None else []
        if len(ids) > self.max_context_tokens:
            keep = self.max_context_tokens - len(prefix)
            ids = prefix + ids[len(ids) - keep:] if keep > 0 else ids[-self.max_context_tokens:]
        return ids

    def __call__(self, pairs: Sequence[tuple[str, str | None]]) -> list[float]:
        firsts = self.first_tokens([prediction for _, prediction in pairs])
        wanted: dict[str, set[int]] = {}
        for (context, _), first in zip(pairs, firsts):
            if first is not None:
                wanted.setdefault(context, set()).add(first[0])
        table = self._probabilities(wanted)
        return [table[context].get(first[0], 0.0) if first is not None else 0.0
                for (context, _), first in zip(pairs, firsts)]

    def _probabilities(self, wanted: dict[str, set[int]]) -> dict[str, dict[int, float]]:
        import torch

        encoded = sorted(((self.context_ids(c), c) for c in wanted), key=lambda item: len(item[0]))
        table: dict[str, dict[int, float]] = {}
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                chunk = [item for item in encoded[start:start + self.batch_size] if item[0]]
                for _, context in encoded[start:start + self.batch_size]:
                    table[context] = {}
                if not chunk:
                    continue
                width = max(len(ids) for ids, _ in chunk)
                input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (ids, _) in enumerate(chunk):
                    input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                    mask[row, width - len(ids):] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                last = self._last_logits(input_ids.to(self.device), mask.to(self.device),
                                         positions.to(self.device))
                probs = last.float().softmax(-1).cpu()
                for row, (_, context) in enumerate(chunk):
                    table[context] = {tid: float(probs[row, tid]) for tid in wanted[context]
                                      if 0 <= tid < probs.shape[-1]}
        return table

    def _last_logits(self, input_ids, mask, positions):
        # only the last position is needed: ask for it alone where the model allows (a full
        # vocabulary-by-sequence logits tensor is the largest thing a forward pass makes)
        try:
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        except TypeError:
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        return out.logits[:, -1, :]


__all__ = [
    "REWARD_FUNCTIONS", "ConditionalDenseReward", "DenseReward", "FirstTokenProbability",
    "FirstTokenReward", "FirstTokens", "Group", "GroupScores", "PrefixReward", "RewardFunction",
    "RewardStats", "Sample", "answer_checked", "completion_text", "extract_prediction", "get_reward_function",
    "make_sample", "prefix_match", "prefix_reward", "rollout_validator", "sample_of", "score_rollouts",
]
