"""Shared-prompt training passes: each context's prompt runs once for all of its completions.

TRL computes the log-probabilities of a batch of completions with one forward pass per row,
prompt included, so a context's prompt runs G times (in the policy's forward and backward and in
the passes without gradients). Here the rows of a pass that carry the same prompt (same token ids,
same left padding) become one packed sequence:

    prompt[:-1]  |  prompt[-1] c1[0] c1[1] ...  |  prompt[-1] c2[0] c2[1] ...  |  ...

with a block attention mask: the shared part is causal, and each branch attends to the shared
part and causally to itself, never to another branch. Every token keeps the position id it has
in the unshared pass (its column in TRL's left-padded prompt + completion tensor). Each branch
opens with a copy of the prompt's last token, whose hidden state is the one that predicts the
branch's first completion token: so every scored position is computed from exactly the tokens it
sees in the unshared pass, and TRL's own fused LM head (temperature, chunking, entropy) scores
them. Padding never enters the packed sequence. Gradients reach the shared prompt from every
branch, as they reach each row's copy of it in the unshared pass.

Exact only where the attention takes a custom 4-D mask and is plain causal attention: `sdpa` or
`eager`, no sliding window, no per-layer attention types other than full attention, a forward
that accepts position ids. Elsewhere (and for rows this layout does not describe: completion masks
with holes, empty prompts, multimodal inputs) the unshared pass runs.
"""

from __future__ import annotations

import inspect

import torch

SUPPORTED_ATTENTION = ("sdpa", "eager")


def unsupported_reason(model) -> str | None:
    """Why the shared pass would not be exact for this model (None: it is)."""
    config = model.config
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        return f"attention implementation {attention!r} takes no custom block mask (sdpa or eager do)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    layer_types = getattr(config, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        return "layers other than full attention"
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return "the model's forward takes no position ids"
    return None


def group_rows(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """Rows with identical prompts (ids and padding), in order of first appearance."""
    groups: dict[bytes, list[int]] = {}
    keys = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1).cpu()
    for row, key in enumerate(keys):
        groups.setdefault(key.numpy().tobytes(), []).append(row)
    return list(groups.values())


def _left_padded(mask: torch.Tensor) -> bool:
    """Every row: zeros, then ones (at least one)."""
    return bool((mask[:, 1:] >= mask[:, :-1]).all()) and bool(mask[:, -1].all()) if mask.size(1) else False


def _right_padded(mask: torch.Tensor) -> bool:
    """Every row: ones, then zeros."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all()) if mask.size(1) > 1 else True


def packable(attention_mask: torch.Tensor, logits_to_keep: int) -> bool:
    """Whether the packed layout describes these rows exactly."""
    prompt_width = attention_mask.size(1) - logits_to_keep
    if prompt_width < 1:
        return False
    return _left_padded(attention_mask[:, :prompt_width]) and _right_padded(attention_mask[:, prompt_width:])


# Longest packed sequence: its block mask holds length² entries per row
MAX_PACKED_TOKENS = 8192


class Packed:
    """Packed sequences, right padded to the longest, and where each row's scored completion
    tokens sit in them. A prompt's branches share one packed sequence while its attention costs no
    more than the unshared rows' (length² against the sum of theirs: a dense block mask computes
    the masked pairs too) and it stays under MAX_PACKED_TOKENS; further branches open another
    sequence with the prompt again. Short completions after a long prompt (RPT's) all share one."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int):
        device = input_ids.device
        prompt_width = input_ids.size(1) - logits_to_keep
        sequences: list[dict] = []
        # (row, completion column) scored <- (packed row, packed position) of its predictor
        out_row, out_col, src_row, src_pos = [], [], [], []
        ids_cpu, mask_cpu = input_ids.cpu(), attention_mask.cpu()
        for rows in group_rows(ids_cpu[:, :prompt_width], mask_cpu[:, :prompt_width]):
            prompt_cols = mask_cpu[rows[0], :prompt_width].nonzero().squeeze(1)
            prompt = ids_cpu[rows[0], prompt_cols]
            current = None
            for row in rows:
                length = int(mask_cpu[row, prompt_width:].sum())
                alone = (len(prompt) + length) ** 2  # attention cost of the unshared row
                grown = (len(current["ids"]) + length + 1) if current else 0
                if current is None or grown > MAX_PACKED_TOKENS or grown**2 > current["cost"] + alone:
                    current = {
                        "ids": prompt[:-1].tolist(),
                        "pos": prompt_cols[:-1].tolist(),
                        "seg": [0] * (len(prompt) - 1),
                        "labels": [-100] * (len(prompt) - 1),
                        "cost": 0,
                    }
                    sequences.append(current)
                completion = ids_cpu[row, prompt_width : prompt_width + length].tolist()
                start, branch = len(current["ids"]), max(current["seg"], default=0) + 1
                current["ids"] += [int(prompt[-1])] + completion
                current["pos"] += [int(prompt_cols[-1])] + list(range(prompt_width, prompt_width + length))
                current["seg"] += [branch] * (length + 1)
                current["labels"] += completion + [-100]
                current["cost"] += alone
                out_row += [row] * length
                out_col += list(range(length))
                src_row += [len(sequences) - 1] * length
                src_pos += list(range(start, start + length))
        longest = max(len(sequence["ids"]) for sequence in sequences)

        def padded(key: str, fill: int) -> torch.Tensor:
            rows = [sequence[key] + [fill] * (longest - len(sequence[key])) for sequence in sequences]
            return torch.tensor(rows, dtype=torch.long, device=device)

        self.input_ids = padded("ids", 0)
        self.position_ids = padded("pos", 0)
        self.labels = padded("labels", -100)
        self.segments = padded("seg", -1)  # 0: shared prompt, k: branch k, -1: padding
        self.rows, self.logits_to_keep = input_ids.size(0), logits_to_keep
        index = dict(dtype=torch.long, device=device)
        self.out_row, self.out_col = torch.tensor(out_row, **index), torch.tensor(out_col, **index)
        self.src_row, self.src_pos = torch.tensor(src_row, **index), torch.tensor(src_pos, **index)

    @property
    def tokens(self) -> int:
        return int((self.segments >= 0).sum())

    def attention_mask(self, attention: str, dtype: torch.dtype) -> torch.Tensor:
        """(groups, 1, L, L): query q sees key k when k <= q and k is shared or in q's branch;
        padding sees only itself (no row is empty, so softmax never sees a row of -inf)."""
        seg = self.segments
        length = seg.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
        key, query = seg.unsqueeze(1), seg.unsqueeze(2)
        allowed = causal & (key >= 0) & ((key == 0) | (key == query))
        allowed |= torch.eye(length, dtype=torch.bool, device=seg.device)
        allowed = allowed.unsqueeze(1)
        if attention == "sdpa":
            return allowed
        blocked = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
        return blocked.masked_fill(~allowed, torch.finfo(dtype).min)

    def unpack(self, per_position: torch.Tensor) -> torch.Tensor:
        """(rows, logits_to_keep) from per packed position values; 0 where nothing is scored."""
        out = per_position.new_zeros(self.rows, self.logits_to_keep)
        out[self.out_row, self.out_col] = per_position[self.src_row, self.src_pos]
        return out


def shared_logps_and_entropies(
    model, input_ids, attention_mask, logits_to_keep: int, *, batch_size: int | None, compute_entropy: bool
):
    """TRL's `_get_per_token_logps_and_entropies` (a model patched with TRL's fused LM head),
    with each prompt run once per chunk of `batch_size` rows. Returns (log-probs, entropies)."""
    config = getattr(model, "module", model).config
    attention = config._attn_implementation
    batch_size = batch_size or input_ids.size(0)
    logps, entropies = [], []
    for start in range(0, input_ids.size(0), batch_size):
        packed = Packed(
            input_ids[start : start + batch_size], attention_mask[start : start + batch_size], logits_to_keep
        )
        dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        outputs = model(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask(attention, dtype),
            position_ids=packed.position_ids,
            shift_labels=packed.labels,
            fused_lm_head=True,
        )
        logps.append(packed.unpack(outputs.log_probs))
        if compute_entropy:
            entropies.append(packed.unpack(outputs.entropy))
    return torch.cat(logps, dim=0), (torch.cat(entropies, dim=0) if compute_entropy else None)


def grouped_permutation(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """A random order of the rows that keeps the rows of one prompt together: groups are shuffled
    (TRL shuffles rows), so micro-batches split the batch along groups and share their prompts."""
    groups = group_rows(prompt_ids, prompt_mask)
    order = torch.randperm(len(groups))
    return torch.tensor([row for g in order.tolist() for row in groups[g]], dtype=torch.long)


__all__ = [
    "MAX_PACKED_TOKENS",
    "Packed",
    "grouped_permutation",
    "group_rows",
    "packable",
    "shared_logps_and_entropies",
    "unsupported_reason",
]
