"""How far a bfloat16 run of `rpt entropy` lands from a float32 run of the same model, with the
top-k logits recomputed in float32 (rpt's way) and with entropies taken from the bfloat16 logits
themselves (the way before), on the same positions. Reported: mean and largest |difference| in
nats, and how many (position, threshold) pairs of the paper's splits (0.5, 1.0, 1.5) change side.

    python benchmarks/bench_entropy_precision.py [--docs 3] [--device cpu]
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import rpt_cli.entropy as entropy
from rpt_cli.models import BUILTIN_NAME, resolve

ROOT = Path(__file__).resolve().parent.parent


def compare(reference, other) -> tuple[float, float, int, int]:
    pairs = [(x, y) for (_, a), (_, b) in zip(reference, other) for x, y in zip(a, b) if x is not None]
    diffs = [abs(x - y) for x, y in pairs]
    flips = sum((x > t) != (y > t) for x, y in pairs for t in (0.5, 1.0, 1.5))
    return sum(diffs) / len(diffs), max(diffs), flips, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=3, help="held-out documents of examples/data/val.jsonl")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = resolve(BUILTIN_NAME)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [json.loads(line)["text"] for line in open(ROOT / "examples/data/val.jsonl", encoding="utf-8")][: args.docs]
    models = {
        dtype: AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
        for dtype in (torch.float32, torch.bfloat16)
    }
    reference = entropy.EntropyScorer(models[torch.float32], tokenizer, device=args.device).score_texts(texts)
    ours = entropy.EntropyScorer(models[torch.bfloat16], tokenizer, device=args.device).score_texts(texts)
    # the way before: top-k entropy of the bfloat16 logits as they come out of the output layer
    entropy.head_topk_entropy = lambda head, hidden, k, transform=None: entropy.topk_entropy(head(hidden), k, transform)
    before = entropy.EntropyScorer(models[torch.bfloat16], tokenizer, device=args.device).score_texts(texts)
    for name, run in (("bfloat16, top-k in float32 (rpt)", ours), ("bfloat16, top-k of bf16 logits", before)):
        mean, largest, flips, n = compare(reference, run)
        print(
            f"{name}: mean |diff| {mean:.4f} nats, max {largest:.4f}, {flips} of {3 * n} split thresholds crossed "
            f"({n} positions)"
        )


if __name__ == "__main__":
    main()
