"""The objectives `rpt train --objective` trains with, all on the same samples, data order, run
folder, metrics and checkpoints:

- `rpt` (the default, the paper's): GRPO on TRL with the Eq. 3 reward of a predicted next token.
- `ntp`: continued next-token training on each sample's text (its context, then its target up to
  the target's last token boundary), on TRL's SFTTrainer: the paper's baseline (Table 2).
- `coldstart`: supervised training, on TRL's SFTTrainer, on examples in the paper's answer format
  that the model makes itself (a thought naming its own next-token candidates, `</think>`, the
  answer in `\\boxed{}`): what a base or small model needs before GRPO in the boxed format gets
  any reward (coldstart.py).
- `rlp`: GRPO with RLP's information-gain reward (arXiv 2510.01265): a thought z is sampled after
  the context, and rewarded by log p_θ(x_t | x_<t, z) − log p_EMA(x_t | x_<t), the true next
  token teacher-forced after the thought under the policy and after the context alone under an
  EMA copy of the policy. The gradient flows through the thought's tokens only.

Nothing here imports torch: the names and checks serve the settings layer.
"""

from __future__ import annotations

from rpt_cli.errors import UsageError

RPT = "rpt"
NTP = "ntp"
RLP = "rlp"
COLDSTART = "coldstart"
OBJECTIVES = (RPT, NTP, RLP, COLDSTART)
# the objectives trained with supervised losses on TRL's SFTTrainer (one sequence per context)
SUPERVISED = (NTP, COLDSTART)

# RLP's EMA teacher decay (arXiv 2510.01265: the teacher follows the policy as
# φ ← τ·φ + (1 − τ)·θ after every optimizer step, τ = 0.999)
RLP_EMA_DECAY = 0.999
# RLP's advantage: G/(G − 1)·(r − mean of the group), never divided by the group's standard
# deviation (TRL's `scale_rewards` must be "none"; the trainer applies the factor)
RLP_SCALE_REWARDS = "none"
# The thought opens right after the context and closes with THOUGHT_CLOSE; the true next token
# is scored after the closer (the template is ours: RLP's paper shows no prompt for base models).
RLP_TEMPLATE = "thought"
THOUGHT_OPEN = "<think>"
THOUGHT_CLOSE = "</think>"


def check_objective(value: str) -> str:
    if value not in OBJECTIVES:
        raise UsageError(f"--objective {value}: choose one of {', '.join(OBJECTIVES)}")
    return value


__all__ = [
    "COLDSTART",
    "NTP",
    "OBJECTIVES",
    "RLP",
    "RLP_EMA_DECAY",
    "RLP_SCALE_REWARDS",
    "RLP_TEMPLATE",
    "RPT",
    "SUPERVISED",
    "THOUGHT_CLOSE",
    "THOUGHT_OPEN",
    "check_objective",
]
