"""`rpt train`: reinforcement pre-training with GRPO on TRL.

- `config`: the settings (`TrainConfig`), YAML + command-line precedence, checks, batch plan;
- `data`: samples in, TRL dataset rows out, the seeded per-step data order;
- `trainer`: `RPTTrainer`, TRL's GRPOTrainer with RPT's data order, prompts, metrics, dynamic
  sampling and complete-or-absent checkpoints (imports torch and TRL);
- `batches`, `checkpoints`: the tensor and folder plumbing those need;
- `log`: metrics.jsonl, batches.jsonl and the progress line of each step;
- `run`: the whole job, from checks to the final model.

Only `config` and `data` are imported here: they need neither torch nor TRL.
"""

from rpt_cli.training.config import DEFAULTS, TrainConfig, resolve_config

__all__ = ["DEFAULTS", "TrainConfig", "resolve_config"]
