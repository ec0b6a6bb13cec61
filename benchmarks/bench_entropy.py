"""rpt entropy throughput against a bare transformers forward pass on the same batches, one run.

CPU (built-in model, example corpus):
    .venv/bin/python benchmarks/bench_entropy.py
GPU (a 494M-parameter Qwen2-shaped model with random weights, 32 x 1024 tokens, bf16):
    python benchmarks/bench_entropy.py --gpu

The bare pass is `model(input_ids, attention_mask)` returning the full logits, the least any
top-k entropy needs; rpt's pass is `EntropyScorer` end to end (tokenization excluded in --gpu mode,
where documents are random token ids). Both see identical padded batches. Reported: tokens/s of
each (median of --repeats alternating runs) and their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpt_cli.entropy import EntropyScorer, Segment, pack_batches, windows  # noqa: E402
from rpt_cli.tokens import TokenizedDoc  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_forward(model, batches, docs, prefix, pad_id, device) -> None:
    """The reference: full-vocabulary logits for the same padded batches."""
    with torch.inference_mode():
        for batch in batches:
            rows = [prefix + docs[s.doc].ids[s.start : s.end] for s in batch]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, tokens in enumerate(rows):
                ids[r, : len(tokens)] = torch.tensor(tokens)
                mask[r, : len(tokens)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logits[0, 0, 0].item()  # wait for the result, as rpt does when it copies values out


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="random-weight 0.5B Qwen2-shaped model on CUDA")
    parser.add_argument("--model", default="smollm2-135m", help="CPU mode: model to score with")
    parser.add_argument("--corpus", default=str(ROOT / "examples" / "data" / "corpus.jsonl"))
    parser.add_argument("--docs", type=int, default=16, help="CPU mode: documents of the corpus to use")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    if args.gpu:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        device = "cuda"
        config = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        )
        model = Qwen2ForCausalLM(config).to(device=device, dtype=torch.bfloat16).eval()
        rng = random.Random(0)
        docs = [
            TokenizedDoc([rng.randrange(config.vocab_size) for _ in range(1024)], list(range(1025))) for _ in range(32)
        ]
        batch_tokens = 32 * 1024 if args.batch_tokens == 8192 else args.batch_tokens
        # documents arrive as token ids: the model side of the scorer, without a tokenizer
        scorer = EntropyScorer(model, _IdsOnlyTokenizer(), device=device, window=1024, batch_tokens=batch_tokens)
        run_rpt = lambda: _score_ids(scorer, docs)  # noqa: E731
        label = "Qwen2-shaped 494M (random weights), bf16, 32 x 1024 tokens"
    else:
        import orjson

        from rpt_cli.models import load_model

        model, tokenizer, device = load_model(args.model, device="cpu", dtype=args.dtype)
        texts = [orjson.loads(line)["text"] for line in Path(args.corpus).read_text().splitlines()[: args.docs]]
        scorer = EntropyScorer(model, tokenizer, device=device, batch_tokens=args.batch_tokens)
        docs = scorer.doc_tokenizer(texts)
        run_rpt = lambda: scorer.score_texts(texts)  # noqa: E731
        label = f"{args.model} on {len(texts)} example documents, {next(model.parameters()).dtype}, {device}"

    segments = [
        Segment(k, s, e, f)
        for k, d in enumerate(docs)
        for s, e, f in windows(len(d.ids), scorer.body, scorer.overlap)
        if e > s
    ]
    batches = pack_batches(segments, len(scorer.prefix), scorer.batch_tokens)
    tokens = sum(len(d.ids) for d in docs)
    run_bare = lambda: bare_forward(model, batches, docs, scorer.prefix, scorer.pad_id, device)  # noqa: E731

    run_bare(), run_rpt()  # warm up both paths
    bare_times, rpt_times = [], []
    for _ in range(args.repeats):
        bare_times.append(timed(run_bare, device))
        rpt_times.append(timed(run_rpt, device))
    bare = tokens / statistics.median(bare_times)
    rpt = tokens / statistics.median(rpt_times)
    print(f"model: {label}")
    print(f"tokens per pass: {tokens:,} in {len(batches)} batches; repeats: {args.repeats}")
    print(f"bare forward pass (full logits): {bare:,.0f} tokens/s")
    print(f"rpt entropy (top-{scorer.top_k} entropy): {rpt:,.0f} tokens/s")
    print(f"ratio rpt / bare: {rpt / bare:.2f}x")


class _IdsOnlyTokenizer:
    """Stands in for a tokenizer in --gpu mode, where documents arrive as token ids already."""

    pad_token_id, eos_token_id, is_fast = 0, 0, False
    all_special_ids: list[int] = []
    added_tokens_decoder: dict = {}
    backend_tokenizer = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1]}


def _score_ids(scorer: EntropyScorer, docs: list[TokenizedDoc]) -> None:
    results = [[None] * len(d.ids) for d in docs]
    segments = [
        Segment(k, s, e, f)
        for k, d in enumerate(docs)
        for s, e, f in windows(len(d.ids), scorer.body, scorer.overlap)
        if e > s
    ]
    for batch in pack_batches(segments, len(scorer.prefix), scorer.batch_tokens):
        scorer._run_batch(batch, docs, results)


if __name__ == "__main__":
    main()
