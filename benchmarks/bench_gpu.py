"""rpt against the bare library doing the same work, every path in one run, one JSON of ratios.

    benchmarks/gpu.sh                                            # one GPU: --size 0.5b, <= 8 minutes
    python benchmarks/bench_gpu.py --size tiny --device cpu -o bench-cpu.json   # the same code on a CPU

The model is a randomly initialised Qwen2 (benchmarks/random_model.py: `0.5b` has Qwen2.5-0.5B's
layer sizes and 151,936-token vocabulary; `tiny` a few million parameters), saved once to a
temporary folder, so nothing is downloaded. Each part reuses the method of its own benchmark
script (the bare side, the timing, the alternation) with this model:

- entropy: `EntropyScorer` on random token ids vs a bare forward pass returning the full logits
  (bench_entropy.py); also with `torch.topk` in place of rpt's two-stage top-k (rpt_cli/topk.py),
  to show what that change buys on this device. Target: at least 0.9x.
- rollout: the hf backend vs bare `model.generate` on the same rows (bench_rollout.py); with vLLM
  installed also vLLM's tokens/s through rpt's vLLM backend (skipped with a message otherwise).
- train: one `rpt train` step vs one bare TRL `GRPOTrainer` step, same config and data
  (bench_train.py). Target: at most 1.05x the time.
- eval: `rpt eval --mode ntp` (`evaluate_ntp`, every context its own row) vs a bare batched
  forward pass with `logits_to_keep=1` (bench_eval.py). Target: at least 0.9x.

Ratios are rpt / bare throughput (entropy, rollout, eval) or rpt / bare step time (train). The
JSON is rewritten after every part, so a run cut short keeps what it measured. A part that fails
is recorded with its error and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from random_model import SIZES, save_random_qwen2  # noqa: E402

# the work of each part per size: the 0.5b figures are the reference runs of the other scripts
# and environment.md; tiny ones keep a CPU run to minutes
WORK = {
    "smoke": {
        "entropy": {"docs": 2, "tokens": 128, "batch_tokens": 512},
        "rollout": {"prompts": 2, "n": 2, "new_tokens": 4},
        "train": {"contexts": 2, "G": 2, "new_tokens": 4, "context_tokens": 32, "steps": 1, "repeats": 1},
        "eval": {"samples": 16, "context_tokens": 32, "batch_tokens": 512},
        "repeats": 1,
    },
    "tiny": {
        "entropy": {"docs": 8, "tokens": 512, "batch_tokens": 4096},
        "rollout": {"prompts": 4, "n": 4, "new_tokens": 32},
        "train": {"contexts": 2, "G": 4, "new_tokens": 16, "context_tokens": 64, "steps": 2, "repeats": 2},
        "eval": {"samples": 64, "context_tokens": 128, "batch_tokens": 4096},
        "repeats": 3,
    },
    "0.5b": {
        "entropy": {"docs": 32, "tokens": 1024, "batch_tokens": 32 * 1024},
        "rollout": {"prompts": 8, "n": 8, "new_tokens": 256},
        "train": {"contexts": 8, "G": 8, "new_tokens": 256, "context_tokens": 160, "steps": 3, "repeats": 2},
        "eval": {"samples": 512, "context_tokens": 384, "batch_tokens": 32 * 1024},
        "repeats": 3,
    },
}
PARTS = ("entropy", "rollout", "vllm", "train", "eval")
TARGETS = {"entropy": (">=", 0.9), "train": ("<=", 1.05), "eval": (">=", 0.9)}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def alternate(sides: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each side over `repeats` rounds, the order of the sides alternating
    between rounds (the second of a pair inherits the first's allocator and cache state)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for k in range(repeats):
        order = list(sides.items())
        for name, fn in order if k % 2 == 0 else order[::-1]:
            times[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


def load(folder: Path, device: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The parts
# ---------------------------------------------------------------------------------------------


def bench_entropy_part(folder: Path, device: str, dtype: str, work: dict, repeats: int) -> dict:
    import torch
    from bench_entropy import _score_ids, bare_forward

    import rpt_cli.entropy as entropy
    from rpt_cli.entropy import EntropyScorer, Segment, pack_batches, windows
    from rpt_cli.tokens import TokenizedDoc

    model, tokenizer = load(folder, device, dtype)
    rng = random.Random(0)
    vocab = model.config.vocab_size - 3  # no special tokens inside documents
    n = work["tokens"]
    docs = [TokenizedDoc([rng.randrange(vocab) for _ in range(n)], list(range(n + 1))) for _ in range(work["docs"])]
    scorer = EntropyScorer(model, tokenizer, device=device, window=n + 1, batch_tokens=work["batch_tokens"])
    segments = [
        Segment(k, s, e, f) for k, d in enumerate(docs) for s, e, f in windows(len(d.ids), scorer.body, scorer.overlap)
    ]
    batches = pack_batches(segments, len(scorer.prefix), scorer.batch_tokens)

    def rpt_torch_topk():  # the scorer as it was before rpt_cli/topk.py
        saved = entropy.topk_by_blocks
        entropy.topk_by_blocks = lambda logits, k: torch.topk(logits, k, dim=-1, sorted=False)
        try:
            _score_ids(scorer, docs)
        finally:
            entropy.topk_by_blocks = saved

    sides = {
        "bare": lambda: bare_forward(model, batches, docs, scorer.prefix, scorer.pad_id, device),
        "rpt": lambda: _score_ids(scorer, docs),
        "rpt_torch_topk": rpt_torch_topk,
    }
    for fn in sides.values():  # warm-up
        fn()
    seconds = alternate(sides, repeats, device)
    tokens = sum(len(d.ids) for d in docs)
    rates = {name: tokens / s for name, s in seconds.items()}
    result = {
        "tokens_per_pass": tokens,
        "batches": len(batches),
        "uses_head_path": scorer.uses_head,
        "bare_forward_tokens_per_s": round(rates["bare"]),
        "rpt_tokens_per_s": round(rates["rpt"]),
        "rpt_with_torch_topk_tokens_per_s": round(rates["rpt_torch_topk"]),
        "ratio": round(rates["rpt"] / rates["bare"], 3),
        "ratio_with_torch_topk": round(rates["rpt_torch_topk"] / rates["bare"], 3),
    }
    return result


def bench_rollout_part(folder: Path, device: str, dtype: str, work: dict, repeats: int) -> dict:
    from bench_rollout import bench_hf, cpu_prompts

    model, tokenizer = load(folder, device, dtype)
    prompts = cpu_prompts(tokenizer, work["prompts"])
    result = bench_hf(model, tokenizer, prompts, work["n"], work["new_tokens"], repeats, device)
    return result


def bench_vllm_part(folder: Path, device: str, dtype: str, work: dict, repeats: int, hf: dict | None) -> dict:
    from bench_rollout import bench_vllm, cpu_prompts

    from rpt_cli.generation.vllm_backend import vllm_installed

    if not vllm_installed():
        return {"skipped": "vLLM is not installed on this machine (pip install 'rpt[vllm]')"}
    from transformers import AutoTokenizer

    prompts = cpu_prompts(AutoTokenizer.from_pretrained(folder), work["prompts"])
    # a CPU engine starts in about a minute eager, three with graph capture (environment.md)
    result = bench_vllm(
        str(folder),
        prompts,
        work["n"],
        work["new_tokens"],
        max(1, repeats - 1),
        enforce_eager=not device.startswith("cuda"),
        dtype=dtype,
    )
    if hf and "hf_backend_tokens_per_s" in hf:
        result["vllm_over_hf_backend"] = round(result["vllm_tokens_per_s"] / hf["hf_backend_tokens_per_s"], 2)
    # rpt entropy --backend vllm is not timed by this script yet (it would start a second engine)
    result["entropy_backend_vllm"] = "not measured by this script (rpt entropy --backend vllm exists; time it alone)"
    return result


def bench_train_part(folder: Path, device: str, dtype: str, work: dict, scratch: Path) -> dict:
    from bench_train import compare

    scratch.mkdir(parents=True, exist_ok=True)
    result = compare(
        str(folder),
        scratch,
        contexts=work["contexts"],
        G=work["G"],
        new_tokens=work["new_tokens"],
        context_tokens=work["context_tokens"],
        steps=work["steps"],
        repeats=work["repeats"],
        gradient_checkpointing=device.startswith("cuda"),
    )
    result["ratio"] = round(result["ratio"], 3)
    del result["model"]  # a temporary folder: the report's size and shape name the model
    return result


def bench_eval_part(folder: Path, device: str, dtype: str, work: dict, repeats: int, scratch: Path) -> dict:
    import orjson
    from bench_eval import bare_batches, run_bare
    from bench_train import make_samples

    from rpt_cli.evaluate import NextTokenPredictor, evaluate_ntp, select_samples

    model, tokenizer = load(folder, device, dtype)
    path = scratch / "eval-samples.jsonl"
    scratch.mkdir(parents=True, exist_ok=True)
    make_samples(tokenizer, path, count=work["samples"], context_tokens=work["context_tokens"])
    records = [{**orjson.loads(line), "entropy": 2.0} for line in path.read_bytes().splitlines()]
    samples = select_samples(records, "all", work["samples"])
    contexts = [s.context for s in samples]
    predictor = NextTokenPredictor(model, tokenizer, device, batch_tokens=work["batch_tokens"], share_passes=False)
    batches = bare_batches(predictor, contexts, work["batch_tokens"])
    run_bare(model, batches[-1:]), evaluate_ntp(samples[:2], predictor)  # warm-up
    outputs: dict[str, list] = {}

    def bare():
        outputs["bare"] = run_bare(model, batches)

    def rpt():
        outputs["rpt"] = [d["token_id"] for d in evaluate_ntp(samples, predictor)[1]]

    seconds = alternate({"bare": bare, "rpt": rpt}, repeats, device)
    order = sorted(range(len(contexts)), key=lambda i: len(predictor.context_ids([contexts[i]])[0]), reverse=True)
    bare_by_sample = [0] * len(contexts)
    for i, token in zip(order, outputs["bare"]):
        bare_by_sample[i] = token
    rates = {name: len(contexts) / s for name, s in seconds.items()}
    result = {
        "samples": len(contexts),
        "context_tokens": work["context_tokens"],
        "bare_positions_per_s": round(rates["bare"], 1),
        "rpt_positions_per_s": round(rates["rpt"], 1),
        "ratio": round(rates["rpt"] / rates["bare"], 3),
        "same_predictions": sum(a == b for a, b in zip(outputs["rpt"], bare_by_sample)),
    }
    return result


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b", help="model and work size (default 0.5b)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dtype", help="weights: bfloat16 on cuda, float32 on cpu by default")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 3)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("-o", "--output", default="bench-gpu.json", help="the JSON of figures (default bench-gpu.json)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    import torch
    import transformers
    import trl

    from rpt_cli.training.run import _quiet_libraries

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --size tiny for a CPU run)")
    if args.threads:
        torch.set_num_threads(args.threads)
    _quiet_libraries(False)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    work = WORK[args.size]
    repeats = args.repeats or work["repeats"]
    started = time.perf_counter()
    report: dict = {
        "size": args.size,
        "shape": SIZES[args.size],
        "dtype": dtype,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "repeats": repeats,
        "work": {k: v for k, v in work.items() if k in parts or (k == "rollout" and "vllm" in parts)},
        "targets": {name: f"{op} {value}" for name, (op, value) in TARGETS.items()},
    }
    output = Path(args.output)

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        output.write_text(json.dumps(report, indent=1) + "\n")

    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        folder = save_random_qwen2(Path(scratch) / "model", args.size, dtype)
        with torch.device("meta"):
            report["parameters"] = sum(
                p.numel()
                for p in transformers.AutoModelForCausalLM.from_config(
                    transformers.AutoConfig.from_pretrained(folder)
                ).parameters()
            )
        for part in parts:
            print(f"bench_gpu: {part} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            try:
                if part == "entropy":
                    result = bench_entropy_part(folder, args.device, dtype, work["entropy"], repeats)
                elif part == "rollout":
                    result = bench_rollout_part(folder, args.device, dtype, work["rollout"], repeats)
                elif part == "vllm":
                    result = bench_vllm_part(
                        folder, args.device, dtype, work["rollout"], repeats, report.get("rollout")
                    )
                elif part == "train":
                    result = bench_train_part(folder, args.device, dtype, work["train"], Path(scratch) / "train")
                else:
                    result = bench_eval_part(folder, args.device, dtype, work["eval"], repeats, Path(scratch) / "eval")
            except Exception as error:  # noqa: BLE001 - one broken part must not lose the others' figures
                failed = True
                traceback.print_exc()
                result = {"error": f"{type(error).__name__}: {error}"}
            free(args.device)  # the part's model and buffers go before the next part loads its own
            result["seconds"] = round(time.perf_counter() - began, 1)
            if part in TARGETS and "ratio" in result:
                op, value = TARGETS[part]
                result["target"] = f"{op} {value}"
                result["met"] = result["ratio"] >= value if op == ">=" else result["ratio"] <= value
            report[part] = result
            shown = ("ratio", "vllm_over_hf_backend", "skipped", "error")
            summary = next((f"{key} {result[key]}" for key in shown if key in result), "")
            print(f"bench_gpu: {part}: {summary} ({result['seconds']} s)", file=sys.stderr, flush=True)
            write()
    report["ratios"] = {part: report[part]["ratio"] for part in parts if "ratio" in report.get(part, {})}
    write()
    print(json.dumps(report["ratios"]))
    return 1 if failed else 0


if __name__ == "__main__":  # vLLM spawns its engine process: the guard keeps it from rerunning this
    sys.exit(main())
