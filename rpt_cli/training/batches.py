"""Tensor plumbing for dynamic sampling: which groups carry a learning signal, and how groups kept
from several generation rounds become one training batch again.

TRL's `_generate_and_score_completions` returns a dict of per-completion tensors (rows), padded
per round: prompts on the left, completions on the right. Rows from different rounds therefore
have different widths; `concat_rows` pads them to a common width the same way TRL does.
"""

from __future__ import annotations

import torch

# How each per-row field of TRL's generation output is padded, and with what.
PAD_LEFT = {"prompt_ids": None, "prompt_mask": 0}  # None: the tokenizer's pad token id
PAD_RIGHT = {
    "completion_ids": None,
    "completion_mask": 0,
    "old_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "tool_mask": 1,
    "importance_sampling_ratio": 1.0,
}
ROW_FIELDS = {"advantages"}
BATCH_FIELDS = {"num_items_in_batch"}  # recomputed for the merged batch


def zero_variance_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """One flag per group of `num_generations` consecutive rewards: True when the rewards are all
    equal (so every advantage is zero and the group adds nothing to the gradient). NaN rewards
    (completions no reward function could score) are left out, as TRL leaves them out; a group
    with fewer than two scored completions has no variance either. The tolerance is TRL's own
    (`frac_reward_zero_std`)."""
    grouped = rewards.view(-1, num_generations)
    scored = ~torch.isnan(grouped)
    count = scored.sum(dim=1)
    filled = torch.where(scored, grouped, torch.zeros_like(grouped))
    mean = filled.sum(dim=1) / count.clamp(min=1)
    spread = torch.where(scored, grouped - mean.unsqueeze(1), torch.zeros_like(grouped))
    std = (spread.pow(2).sum(dim=1) / (count - 1).clamp(min=1)).sqrt()
    return torch.isclose(std, torch.zeros_like(std)) | (count < 2)


def group_rows(groups: list[int], num_generations: int) -> torch.Tensor:
    """Row indices of whole groups."""
    return torch.tensor([g * num_generations + i for g in groups for i in range(num_generations)], dtype=torch.long)


def _check_fields(batch: dict) -> None:
    known = set(PAD_LEFT) | set(PAD_RIGHT) | ROW_FIELDS | BATCH_FIELDS
    unknown = [key for key, value in batch.items() if value is not None and key not in known]
    if unknown:
        raise ValueError(
            f"dynamic sampling cannot merge the TRL batch field(s) {', '.join(sorted(unknown))} "
            "(multimodal or tool inputs are not supported); switch it off with "
            "--dynamic-sampling-from-step 0"
        )


def select_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The given rows of every per-row field (batch-level fields are dropped)."""
    _check_fields(batch)
    out = {}
    for key, value in batch.items():
        if value is None or key in BATCH_FIELDS:
            continue
        out[key] = value.index_select(0, rows.to(value.device))
    return out


def _pad_to(value: torch.Tensor, width: int, fill, left: bool) -> torch.Tensor:
    missing = width - value.size(1)
    if missing <= 0:
        return value
    padding = value.new_full((value.size(0), missing), fill)
    return torch.cat([padding, value] if left else [value, padding], dim=1)


def concat_rows(parts: list[dict], pad_token_id: int) -> dict:
    """Stack row selections from several rounds, padding prompts on the left and completions on the
    right to the widest part (a token-level importance ratio is padded like its completion)."""
    keys = [key for key in parts[0] if parts[0][key] is not None]
    out = {}
    for key in keys:
        values = [part[key] for part in parts]
        if key in ROW_FIELDS or values[0].dim() == 1:
            out[key] = torch.cat(values, dim=0)
            continue
        left = key in PAD_LEFT
        fill = (PAD_LEFT if left else PAD_RIGHT)[key]
        fill = pad_token_id if fill is None else fill
        if key == "importance_sampling_ratio" and values[0].size(1) == 1:
            out[key] = torch.cat(values, dim=0)  # sequence-level ratio: one value per row
            continue
        width = max(v.size(1) for v in values)
        out[key] = torch.cat([_pad_to(v, width, fill, left) for v in values], dim=0)
    return out


__all__ = ["concat_rows", "group_rows", "select_rows", "zero_variance_groups"]
