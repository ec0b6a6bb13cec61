"""The k largest entries of each row of a wide matrix (logits over a vocabulary), in two stages.

`torch.topk` over a 151,936-entry vocabulary is most of the cost that top-k entropy adds to a
forward pass (docs/entropy.md, "Speed"). For small k there is a cheaper exact route: cut each row
into blocks of `block` entries and take each block's maximum (one pass over the logits at memory
speed); an entry among the row's k largest lies in one of the k blocks with the largest maxima
(otherwise k blocks would each hold a larger entry); so the k largest of those k blocks (k x block
candidates, plus the few entries of a last, shorter block) are the row's k largest. Only the
values matter to the entropy, so ties between equal entries never change a result.
"""

from __future__ import annotations

BLOCK = 128


def topk_by_blocks(logits, k: int, block: int = BLOCK):
    """(values, indices) of the k largest entries of each row of a 2-D tensor, unsorted, as
    `torch.topk(logits, k, dim=-1, sorted=False)` gives them (the same values; among equal values
    the indices may differ). Falls back to `torch.topk` where the rows are too short to gain."""
    import torch

    rows, width = logits.shape
    blocks = width // block
    if blocks < 4 * k:  # few blocks: the second stage would not be much smaller than the first
        return torch.topk(logits, k, dim=-1, sorted=False)
    full = logits[:, : blocks * block].unflatten(-1, (blocks, block))  # a view, no copy
    best = full.amax(dim=-1).topk(k, dim=-1, sorted=False).indices  # (rows, k) blocks to search
    candidates = full.gather(1, best.unsqueeze(-1).expand(rows, k, block)).flatten(1)
    starts = (best * block).unsqueeze(-1) + torch.arange(block, device=logits.device)
    positions = starts.flatten(1)  # vocabulary index of each candidate
    if blocks * block < width:  # the last, shorter block: all its entries are candidates
        tail = torch.arange(blocks * block, width, device=logits.device).expand(rows, -1)
        candidates = torch.cat([candidates, logits[:, blocks * block :]], dim=1)
        positions = torch.cat([positions, tail], dim=1)
    values, picked = candidates.topk(k, dim=-1, sorted=False)
    return values, positions.gather(1, picked)


__all__ = ["BLOCK", "topk_by_blocks"]
