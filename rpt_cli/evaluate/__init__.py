"""`rpt eval`: next-token accuracy per entropy split, in the paper's two modes (Table 1).

- `ntp` (standard next-token): the model's most likely next token after the context, no thinking.
  Its exact bytes (the tokenizer's own token bytes, also when they are part of a character) are
  scored with Eq. 3 by `reward.prefix_match`, the checker of the reward itself, so models with
  different tokenizers compare fairly: a guess is right when it is a prefix of the true
  continuation that ends on a true token boundary.
- `reasoning` (next-token reasoning): prompts from `prompts.PromptBuilder` and k completions per
  context from the generation layer, exactly as `rpt rollout` makes them (`rollout.rollout_chunks`),
  scored by the reward registry (`reward.get_reward_function`), as `rpt reward` scores them.

Splits are the paper's nested ones (`filter.split_label` / `filter.in_split`): a sample belongs to
every split whose entropy threshold its entropy exceeds. Each split gets n, accuracy and a 95 %
Wilson score interval.

A model may be a training run folder of `rpt train` (its final model, else its newest complete
checkpoint) or one checkpoint of a run: reports then carry the run, step and cumulative training
compute (from the run's metrics.jsonl) that `rpt scaling` fits against, and reasoning mode uses the
prompt settings the run was trained with unless told otherwise.

torch, transformers and the generation engines are imported inside the functions that use them.
"""

from rpt_cli.evaluate.core import EvalConfig, Progress, evaluate_model
from rpt_cli.evaluate.ntp import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_CONTEXT_TOKENS,
    NextTokenPredictor,
    PredictorStats,
    Row,
    TokenPrediction,
    batch_rows,
    evaluate_ntp,
    plan_rows,
)
from rpt_cli.evaluate.paired import add_paired, bootstrap_interval, paired_difference, sample_scores, sign_test
from rpt_cli.evaluate.reasoning import evaluate_reasoning
from rpt_cli.evaluate.runs import (
    RUN_CONFIG,
    RUN_METRICS,
    ModelRef,
    checkpoint_step,
    is_run_folder,
    locate_model,
    read_flops,
    read_run_settings,
    run_models,
)
from rpt_cli.evaluate.samples import (
    INTERVAL,
    MODES,
    SPLIT_CHOICES,
    Z95,
    EvalSample,
    Outcome,
    in_policy_tokens,
    report_splits,
    sample_label,
    select_samples,
    split_report,
    summarize,
    wilson_interval,
)
from rpt_cli.evaluate.tables import mode_label, paired_table, report_table
from rpt_cli.forward import model_max_positions

__all__ = [
    "DEFAULT_BATCH_TOKENS",
    "DEFAULT_MAX_CONTEXT_TOKENS",
    "EvalConfig",
    "EvalSample",
    "INTERVAL",
    "MODES",
    "ModelRef",
    "NextTokenPredictor",
    "Outcome",
    "PredictorStats",
    "Progress",
    "RUN_CONFIG",
    "RUN_METRICS",
    "Row",
    "SPLIT_CHOICES",
    "TokenPrediction",
    "Z95",
    "add_paired",
    "batch_rows",
    "bootstrap_interval",
    "checkpoint_step",
    "evaluate_model",
    "evaluate_ntp",
    "evaluate_reasoning",
    "in_policy_tokens",
    "is_run_folder",
    "locate_model",
    "mode_label",
    "model_max_positions",
    "paired_difference",
    "paired_table",
    "plan_rows",
    "read_flops",
    "read_run_settings",
    "report_splits",
    "report_table",
    "run_models",
    "sample_label",
    "sample_scores",
    "select_samples",
    "sign_test",
    "split_report",
    "summarize",
    "wilson_interval",
]
