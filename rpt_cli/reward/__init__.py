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

from rpt_cli.records import check_completions
from rpt_cli.reward.extract import BOXED, THINK_END, completion_text, extract_prediction
from rpt_cli.reward.functions import (
    CORRECTNESS_RULES,
    NEEDS_MODEL,
    NEEDS_TOKENIZER,
    REWARD_FUNCTIONS,
    ConditionalDenseReward,
    DenseReward,
    FirstTokenReward,
    Group,
    GroupScores,
    PrefixReward,
    RewardFunction,
    get_reward_function,
    prefix_reward,
)
from rpt_cli.reward.model import FirstTokenProbability, FirstTokens
from rpt_cli.reward.scoring import (
    RewardStats,
    answer_checked,
    rollout_validator,
    score_rollouts,
)
from rpt_cli.reward.truth import (
    Sample,
    make_sample,
    prefix_match,
    sample_of,
)

__all__ = [
    "BOXED",
    "CORRECTNESS_RULES",
    "ConditionalDenseReward",
    "DenseReward",
    "FirstTokenProbability",
    "FirstTokenReward",
    "FirstTokens",
    "Group",
    "GroupScores",
    "NEEDS_MODEL",
    "NEEDS_TOKENIZER",
    "PrefixReward",
    "REWARD_FUNCTIONS",
    "RewardFunction",
    "RewardStats",
    "Sample",
    "THINK_END",
    "answer_checked",
    "check_completions",
    "completion_text",
    "extract_prediction",
    "get_reward_function",
    "make_sample",
    "prefix_match",
    "prefix_reward",
    "rollout_validator",
    "sample_of",
    "score_rollouts",
]
