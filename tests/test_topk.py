"""rpt_cli.topk.topk_by_blocks gives the values torch.topk gives, and indices that point at them."""

import pytest
import torch

from rpt_cli.entropy import topk_entropy
from rpt_cli.topk import topk_by_blocks


@pytest.mark.parametrize(
    ("rows", "width", "k", "dtype", "ties"),
    [
        (7, 151_936, 16, torch.float32, False),  # Qwen2's vocabulary: 1,187 blocks, no tail
        (5, 49_152 + 37, 16, torch.bfloat16, False),  # a last, shorter block
        (9, 20_000, 16, torch.float32, True),  # many equal values
        (3, 8_192, 16, torch.float32, False),  # exactly 4k blocks: the two-stage path
        (4, 8_000, 16, torch.float32, False),  # fewer: torch.topk itself
        (6, 4_096, 1, torch.float32, False),  # k = 1
    ],
)
def test_same_values_as_torch_topk(rows, width, k, dtype, ties):
    generator = torch.Generator().manual_seed(width)
    logits = torch.randn(rows, width, generator=generator)
    if ties:  # integers in a narrow range: the k-th largest value is shared by many entries
        logits = (logits * 2).round()
    logits = logits.to(dtype)
    # one row's largest entries all in one block, another's spread over the tail
    logits[0, 128:144] = 50
    logits[-1, -5:] = 40
    values, indices = topk_by_blocks(logits, k)
    expected = torch.topk(logits, k, dim=-1).values
    assert torch.equal(values.sort(dim=-1, descending=True).values, expected)
    assert torch.equal(logits.gather(1, indices), values)
    assert all(len(set(row)) == k for row in indices.tolist())  # k distinct entries per row


def test_masked_vocabulary_entries_are_never_picked():
    logits = torch.full((2, 40_000), float("-inf"))
    logits[:, 39_990:] = torch.arange(10.0)
    logits[:, 12_345] = 3.5
    values, indices = topk_by_blocks(logits, 4)
    assert sorted(indices[0].tolist()) == [39_996, 39_997, 39_998, 39_999]
    assert torch.isfinite(values).all()


def test_entropy_unchanged_by_the_two_stages():
    logits = torch.randn(16, 151_936, generator=torch.Generator().manual_seed(1))
    values = torch.topk(logits, 16, dim=-1).values
    logp = values - torch.logsumexp(values, dim=-1, keepdim=True)
    assert torch.allclose(topk_entropy(logits, 16), -(logp.exp() * logp).sum(-1), atol=1e-6)


def test_half_precision_logits_are_ranked_and_scored_in_float32():
    """The full-logit path (models whose output layer cannot be split off) takes the top k of
    bfloat16 logits after upcasting them, a block of rows at a time, as the output-layer path
    does: the entropies equal a float32 reference over the same logits, for more rows than one
    block and with ties at the k-th place."""
    from rpt_cli.entropy import FLOAT32_ROWS

    logits = torch.randn(FLOAT32_ROWS + 3, 5_000, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    logits[:, :40] = 7.0  # 40 tied maxima: any 16 of them give the same entropy
    values = torch.topk(logits.float(), 16, dim=-1).values
    logp = values - torch.logsumexp(values, dim=-1, keepdim=True)
    got = topk_entropy(logits, 16)
    assert got.dtype == torch.float32 and got.shape == (FLOAT32_ROWS + 3,)
    assert torch.allclose(got, -(logp.exp() * logp).sum(-1), atol=1e-6)
    assert topk_entropy(logits[:0], 16).shape == (0,)
