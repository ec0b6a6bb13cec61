"""`rpt eval --mode ntp` throughput against a bare batched forward pass over the same contexts, one run.

    .venv/bin/python benchmarks/bench_eval.py                       # built-in model, CPU
    .venv/bin/python benchmarks/bench_eval.py --limit 512 --device cuda

Samples: `--samples FILE`, by default demo-out/samples.jsonl, made when missing exactly as
`make demo` makes it: `rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 --per-doc 8`
(the example corpus, up to 8 positions per document, so documents hold several contexts each).

Three runs over the same first --limit samples, alternating, --repeats times each:
- bare: every context its own row, token ids prepared beforehand (tokenizing not timed), sorted by
  length, packed into batches of at most --batch-tokens padded tokens, left padded, and
  `model(input_ids, attention_mask, logits_to_keep=1)`, argmax of the last position: the least a
  next-token evaluation can do without sharing work between contexts;
- rpt without sharing (`--no-share`): `evaluate_ntp` end to end (tokenizing, planning, forward
  passes, Eq. 3 scoring), every context its own row, same batching budget;
- rpt with sharing (the default): contexts of one document that are token prefixes of a longer
  context of it take their logits from that context's pass.
Reported: positions (contexts) per second, median over repeats, and each rpt run / bare (target for
no sharing: at least 0.9). All three must predict the same tokens (near-ties aside).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ensure_samples(path: Path) -> None:
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rpt = str(Path(sys.executable).parent / "rpt")
    print(f"making {path}: rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 --per-doc 8", file=sys.stderr)
    subprocess.run(
        f"{rpt} entropy {ROOT / 'examples/data/corpus.jsonl'} | {rpt} filter --min 1.0 --per-doc 8 -o {path}",
        shell=True,
        check=True,
    )


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bare_batches(predictor, contexts: list[str], batch_tokens: int):
    """Left-padded batches of every context on its own row, prepared before timing."""
    import torch

    rows = sorted(predictor.context_ids(contexts), key=len, reverse=True)
    batches, start = [], 0
    while start < len(rows):
        count = max(1, batch_tokens // len(rows[start]))
        chunk = rows[start : start + count]
        width = len(chunk[0])
        ids = torch.full((len(chunk), width), predictor.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, row in enumerate(chunk):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        batches.append((ids.to(predictor.device), mask.to(predictor.device)))
        start += count
    return batches


def run_bare(model, batches) -> list[int]:
    import torch

    out = []
    with torch.inference_mode():
        for ids, mask in batches:
            out += model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].argmax(-1).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default=str(ROOT / "demo-out" / "samples.jsonl"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=96, help="samples to evaluate (the first N)")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    import torch

    from rpt_cli.evaluate import NextTokenPredictor, evaluate_ntp, select_samples
    from rpt_cli.jsonl import read_records
    from rpt_cli.models import load_model
    from rpt_cli.records import evaluation_sample

    ensure_samples(Path(args.samples))
    samples = select_samples(read_records(args.samples, evaluation_sample), "all", args.limit)
    model, tokenizer, device = load_model(args.model, device=args.device, dtype=args.dtype)
    contexts = [s.context for s in samples]
    shared = NextTokenPredictor(model, tokenizer, device, batch_tokens=args.batch_tokens)
    alone = NextTokenPredictor(model, tokenizer, device, batch_tokens=args.batch_tokens, share_passes=False)
    batches = bare_batches(alone, contexts, args.batch_tokens)
    order = sorted(range(len(contexts)), key=lambda i: len(alone.context_ids([contexts[i]])[0]), reverse=True)
    tokens = sum(len(ids) for ids in alone.context_ids(contexts))
    print(
        f"{len(samples)} samples of {len({s.doc_id for s in samples})} documents, {tokens:,} context tokens, "
        f"{args.model} on {device} ({torch.get_num_threads()} threads), batches of <= {args.batch_tokens} tokens",
        file=sys.stderr,
    )

    def timed(fn):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        return time.perf_counter() - start, result

    # one warm-up of each (allocator, kernels), not timed
    run_bare(model, batches[-1:])
    evaluate_ntp(samples[:2], shared)
    times: dict[str, list[float]] = {"bare": [], "rpt, no sharing": [], "rpt, shared passes": []}
    results = {}
    for _ in range(args.repeats):
        seconds, bare = timed(lambda: run_bare(model, batches))
        times["bare"].append(seconds)
        results["bare"] = [0] * len(contexts)
        for i, token in zip(order, bare):
            results["bare"][i] = token
        for name, predictor in (("rpt, no sharing", alone), ("rpt, shared passes", shared)):
            rows_before = predictor.stats.rows
            seconds, (_, details) = timed(lambda predictor=predictor: evaluate_ntp(samples, predictor))
            times[name].append(seconds)
            results[name] = [d["token_id"] for d in details]
            results[name + " rows"] = predictor.stats.rows - rows_before
    base = len(contexts) / statistics.median(times["bare"])
    for name, values in times.items():
        rate = len(contexts) / statistics.median(values)
        rows = results.get(name + " rows", len(contexts))
        print(
            f"{name:>20}: {rate:8.2f} positions/s  ({statistics.median(values):7.1f} s, {rows} forward rows)  "
            f"{rate / base:5.2f}x bare"
        )
    for name in ("rpt, no sharing", "rpt, shared passes"):
        same = sum(a == b for a, b in zip(results[name], results["bare"]))
        print(f"{name:>20}: {same}/{len(contexts)} predictions equal to bare")


if __name__ == "__main__":
    main()
