"""Rollout throughput: the hf backend against a bare `model.generate` on the same batch, and vLLM
beside them. New tokens per second, one run, same machine.

CPU (built-in SmolLM2-135M, 8 prompts x n=8 x 128 new tokens, the reference config of
environment.md; the vLLM CPU build when installed, which takes 1-3 minutes to start):
    .venv/bin/python benchmarks/bench_rollout.py
    .venv/bin/python benchmarks/bench_rollout.py --no-vllm          # hf only
    .venv/bin/python benchmarks/bench_rollout.py --threads 1        # a CPU busy with other work
GPU (a 494M-parameter Qwen2-shaped model with random weights, bf16, 8 prompts x n=8 = 64
sequences x 512 new tokens; vLLM too where it is installed):
    python benchmarks/bench_rollout.py --gpu

Both sides sample the same rows (each prompt n times, left-padded to the same width) with the same
settings (temperature 0.8, no top-k/top-p) and never stop early (`min_new_tokens` =
`max_new_tokens`, vLLM's `ignore_eos`), so each run makes exactly rows x max_new_tokens tokens.
The bare side is `model.generate(input_ids, attention_mask, num_return_sequences=n, ...)` on
tokens prepared beforehand; the backend side is `HFBackend.generate(prompts, n, params)` end to end
(tokenizing, sorting, padding, decoding included). Reported: median tokens/s over --repeats
alternating runs (the side that goes first alternates too) after two short warm-ups each, and the
ratio backend / bare (target: at least 0.95). The hf backend computes each distinct prompt's KV
cache once for its n rows, where bare `generate` computes it n times, so it pulls ahead wherever
the prompt's share of the work is large (on a CPU); a GPU run of a 0.5B model is bound by
per-step launch overhead, where both should be even.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def cpu_prompts(tokenizer, count: int) -> list[str]:
    """Contexts of 100-300 characters from the example corpus, in the paper's template with the
    model's chat template (about 150-200 tokens per prompt)."""
    from rpt_cli.prompts import PromptBuilder, PromptConfig

    builder = PromptBuilder(tokenizer, PromptConfig())
    docs = [
        json.loads(line)["text"]
        for line in (ROOT / "examples/data/corpus.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rng = random.Random(0)
    contexts = []
    for k in range(count):
        text = docs[k % len(docs)]
        contexts.append(text[: rng.randint(100, 300)])
    return [builder.build(context) for context in contexts]


def random_qwen2(device: str):
    """A Qwen2-0.5B-shaped model (494M parameters) with random weights, and a word-level tokenizer
    over the same 151,936-entry vocabulary (nothing can be downloaded on the GPU machines)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab_size = 151_936
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {f"w{i}": i for i in range(vocab_size - len(specials))}
    vocab.update({token: vocab_size - len(specials) + k for k, token in enumerate(specials)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    return model, tokenizer


def bare_generate_fn(model, tokenizer, prompts, n, params, kwargs):
    """`model.generate` on the batch the backend would build, prepared outside the timing."""
    import torch

    from rpt_cli.prompts import encode_prompt

    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(map(len, encoded))
    pad = kwargs["pad_token_id"]
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(encoded):
        ids[r, width - len(row) :] = torch.tensor(row)
        mask[r, width - len(row) :] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)

    def run():
        with torch.inference_mode():
            torch.manual_seed(params.seed)
            out = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=n, **kwargs)
        assert out.shape == (len(prompts) * n, width + params.max_new_tokens)

    return run


def bench_hf(model, tokenizer, prompts, n, max_new_tokens, repeats, device) -> dict:
    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.hf_backend import HFBackend

    backend = HFBackend(model, tokenizer, model_name="bench")
    params = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.8, seed=1, ignore_eos=True)
    kwargs = backend.generation_kwargs(params)  # the very same generate arguments on both sides
    bare = bare_generate_fn(model, tokenizer, prompts, n, params, kwargs)

    def via_backend():
        groups = backend.generate(prompts, n, params)
        assert sum(c.tokens for g in groups for c in g) == len(prompts) * n * max_new_tokens

    # the first GPU calls at a new length pay for allocations (a third of the speed), so the GPU
    # warm-up runs at full length; a short one does on a CPU, where a full one costs minutes
    on_gpu = str(device).startswith("cuda")
    warm = SamplingConfig(max_new_tokens=max_new_tokens if on_gpu else 4, ignore_eos=True, seed=0)
    for _ in range(2 if on_gpu else 1):
        backend.generate(prompts, n, warm)
        bare_generate_fn(model, tokenizer, prompts, n, warm, backend.generation_kwargs(warm))()
    tokens = len(prompts) * n * max_new_tokens
    bare_s, backend_s = [], []
    for k in range(repeats):
        # alternate which side goes first: the second of a pair inherits the first's allocator state
        order = [("bare", bare), ("backend", via_backend)]
        for name, fn in order if k % 2 == 0 else order[::-1]:
            (bare_s if name == "bare" else backend_s).append(timed(fn, device))
        print(
            f"  bare generate {tokens / bare_s[-1]:8.1f} tokens/s   hf backend {tokens / backend_s[-1]:8.1f} tokens/s",
            file=sys.stderr,
            flush=True,
        )
    bare_rate = tokens / statistics.median(bare_s)
    backend_rate = tokens / statistics.median(backend_s)
    return {
        "tokens_per_run": tokens,
        "bare_generate_tokens_per_s": round(bare_rate, 1),
        "hf_backend_tokens_per_s": round(backend_rate, 1),
        "ratio": round(backend_rate / bare_rate, 3),
        "rows_per_generate_call": backend.rows_per_call(max(len(p) for p in prompts) + max_new_tokens),
    }


def bench_vllm(model_spec, prompts, n, max_new_tokens, repeats, *, enforce_eager, dtype) -> dict:
    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.vllm_backend import VLLMBackend

    started = time.perf_counter()
    engine = VLLMBackend(
        model_spec, dtype=dtype, enforce_eager=enforce_eager, max_model_len=2048, gpu_memory_utilization=0.5
    )
    start_s = time.perf_counter() - started
    try:
        params = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.8, seed=1, ignore_eos=True)
        engine.generate(prompts, n, SamplingConfig(max_new_tokens=4, ignore_eos=True))
        tokens = len(prompts) * n * max_new_tokens
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            groups = engine.generate(prompts, n, params)
            runs.append(time.perf_counter() - began)
            assert sum(c.tokens for g in groups for c in g) == tokens
            print(f"  vllm {tokens / runs[-1]:8.1f} tokens/s", file=sys.stderr, flush=True)
    finally:
        engine.close()
    return {
        "vllm_tokens_per_s": round(tokens / statistics.median(runs), 1),
        "vllm_start_s": round(start_s, 1),
        "vllm_enforce_eager": enforce_eager,
        "vllm_dtype": dtype,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="0.5B-class random Qwen2 on CUDA, 64 x 512 new tokens")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 128 (CPU), 512 (--gpu)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-vllm", action="store_true", help="skip vLLM even where it is installed")
    parser.add_argument(
        "--vllm-eager", action="store_true", help="start vLLM with enforce_eager (faster start, slower)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for the hf runs (on a CPU shared with other work, 1 avoids "
        "OpenMP threads waiting on each other, which slowed decoding 40x here)",
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from rpt_cli.generation.vllm_backend import vllm_installed

    report: dict = {"n": args.n, "prompts": args.prompts}
    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu needs a CUDA GPU")
        device, max_new = "cuda", args.max_new_tokens or 512
        model, tokenizer = random_qwen2(device)
        rng = random.Random(0)
        prompts = [
            " ".join(f"w{rng.randrange(150_000)}" for _ in range(rng.randint(96, 160))) for _ in range(args.prompts)
        ]
        report.update(model="random Qwen2 494M, bf16", device=torch.cuda.get_device_name())
    else:
        from rpt_cli.models import BUILTIN_NAME, load_model

        device, max_new = "cpu", args.max_new_tokens or 128
        model, tokenizer, _ = load_model(BUILTIN_NAME, device="cpu", dtype="float32")
        prompts = cpu_prompts(tokenizer, args.prompts)
        report.update(model=f"{BUILTIN_NAME}, float32", device=f"cpu ({torch.get_num_threads()} threads)")
    report["max_new_tokens"] = max_new
    print(f"hf: {args.prompts} prompts x n={args.n} x {max_new} new tokens on {report['device']}", file=sys.stderr)
    report.update(bench_hf(model, tokenizer, prompts, args.n, max_new, args.repeats, device))
    if args.no_vllm:
        report["vllm"] = "skipped (--no-vllm)"
    elif not vllm_installed():
        report["vllm"] = "not installed on this machine"
    else:
        if args.gpu:
            folder = Path("benchmarks/out/random-qwen2")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            spec, dtype = str(folder), "bfloat16"
        else:
            from rpt_cli.models import BUILTIN_NAME

            spec, dtype = BUILTIN_NAME, "auto"
        del model
        print(f"vllm ({'eager' if args.vllm_eager else 'default settings'}): starting the engine", file=sys.stderr)
        report.update(
            bench_vllm(
                spec, prompts, args.n, max_new, max(1, args.repeats - 1), enforce_eager=args.vllm_eager, dtype=dtype
            )
        )
        report["vllm_over_hf"] = round(report["vllm_tokens_per_s"] / report["hf_backend_tokens_per_s"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":  # vLLM spawns its engine process: the guard keeps it from rerunning this
    main()
