"""Step time of `rpt train` against a bare TRL `GRPOTrainer`, same model, data, reward and settings.

Both trainers are built in this one process from the same `GRPOConfig` (`rpt_cli.training.run.
grpo_args`), the same dataset rows (the prompts `rpt train` builds) and the same reward function
(`get_reward_function("prefix")`). The rpt side is exactly what `rpt train` runs
(`rpt_cli.training.run.build`: the data order, metrics and batches files, progress lines, dynamic
sampling bookkeeping); the TRL side is `trl.GRPOTrainer` as it comes. Completions are forced to
the full length (`min_new_tokens`) and every context is cut to the same token count, so both sides
do the same generation work whatever contexts they draw. A step's time is the wall-clock time
between the ends of consecutive optimizer steps (so rpt's per-step logging counts); the first step
of each run is a warm-up and not counted. Runs alternate (TRL, rpt, TRL, rpt, ...) so drifting
machine load hits both sides alike; the ratio is of the medians. Peak memory: the highest resident
set size (CPU; sampled every 20 ms) or CUDA memory allocated (GPU) during each run, above what
the process held when the run started; the maximum over each side's runs.

    python benchmarks/bench_train.py                          # CPU: built-in model, 4 contexts x G=4 x 32 tokens
    python benchmarks/bench_train.py --preset direct          # direct answers: 64-token contexts, G=8, 1 new token
    python benchmarks/bench_train.py --preset boxed           # boxed answers: 256-token contexts, G=8, 64 new tokens
    python benchmarks/bench_train.py --gpu                    # GPU: 0.5B-class model, 8 contexts x G=8 x 256 tokens
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_samples(tokenizer, path: Path, count: int, context_tokens: int, target_tokens: int = 8) -> None:
    """Samples cut from the example corpus at token boundaries of `tokenizer`, every context the
    same number of tokens long (so prompt lengths, and the work per step, match across draws)."""
    docs = [json.loads(line) for line in (ROOT / "examples" / "data" / "corpus.jsonl").open()]
    rows = []
    for doc in docs:
        text = doc["text"]
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = [start for start, _ in offsets]
        for position in range(context_tokens, len(starts) - target_tokens, 37):
            begin, at = starts[position - context_tokens], starts[position]
            ends = [starts[position + k] for k in range(1, target_tokens + 1)]
            target = text[at : ends[-1]]
            boundaries = [len(text[at:end].encode()) for end in ends]
            if boundaries != sorted(set(boundaries)) or not boundaries[0]:
                continue
            rows.append(
                {"id": f"{doc['id']}@{position}", "context": text[begin:at], "target": target, "boundaries": boundaries}
            )
            if len(rows) == count:
                break
        if len(rows) == count:
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def random_qwen2_model(folder: Path, tokenizer_source: str) -> Path:
    """A Qwen2-shaped model of about half a billion parameters (Qwen2.5-0.5B's layer sizes) with
    random weights and the built-in model's tokenizer: the GPU machine has no hub access."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class StepClock:
    """Wall-clock time at the end of every optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.ends: list[float] = []

            def on_train_begin(self, args, state, control, **kwargs):
                self.ends = [time.perf_counter()]

            def on_step_end(self, args, state, control, **kwargs):
                self.ends.append(time.perf_counter())

        return _Clock()


class PeakMemory:
    """Peak memory of the process during a block, above its level when the block started (MB):
    CUDA memory allocated on a GPU, else the resident set size sampled every 20 ms."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        self.peak_mb = 0.0

    @staticmethod
    def _rss() -> int:
        import os

        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start, self._high, self._stop = self._rss(), self._rss(), threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                self._high = max(self._high, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            high = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            high = max(self._high, self._rss())
        self.peak_mb = (high - self._start) / 2**20


PRESETS = {
    # `make demo`'s direct setting: the raw context as the prompt, one sampled token as the answer
    "direct": dict(contexts=4, G=8, new_tokens=1, context_tokens=64, train_config={"answer": "direct"}),
    # the paper's format: v0 prompt in the chat template, a thought and a boxed answer
    "boxed": dict(contexts=4, G=8, new_tokens=64, context_tokens=256, train_config={"answer": "boxed"}),
}


def step_times(clock) -> list[float]:
    """Per-step times after the warm-up step."""
    return [b - a for a, b in zip(clock.ends[1:], clock.ends[2:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="0.5B-class model on a GPU, 8 contexts x G=8 x 256 tokens")
    parser.add_argument("--model", help="model (default: built-in on CPU, a random 0.5B Qwen2 shape with --gpu)")
    parser.add_argument(
        "--tokenizer", help="--gpu: tokenizer folder for the random model (default: the built-in model's)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a setting of docs/train.md's Speed section")
    parser.add_argument(
        "--no-shared-prompt", action="store_true", help="time rpt with --no-shared-prompt (each row runs its prompt)"
    )
    parser.add_argument("--contexts", type=int, help="contexts per step (CPU 4, GPU 8)")
    parser.add_argument("-G", "--num-generations", type=int, help="completions per context (CPU 4, GPU 8)")
    parser.add_argument("--new-tokens", type=int, help="completion tokens (CPU 32, GPU 256)")
    parser.add_argument("--context-tokens", type=int, help="context tokens of every sample (default 160)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per run, after one warm-up step")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's; 1 is steadier on a busy machine)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args()
    preset = PRESETS.get(options.preset, {})
    contexts = options.contexts or preset.get("contexts") or (8 if options.gpu else 4)
    G = options.num_generations or preset.get("G") or (8 if options.gpu else 4)
    new_tokens = options.new_tokens or preset.get("new_tokens") or (256 if options.gpu else 32)
    context_tokens = options.context_tokens or preset.get("context_tokens") or 160
    train_config = dict(preset.get("train_config", {}))
    if options.no_shared_prompt:
        train_config["shared_prompt"] = False

    import torch

    from rpt_cli.models import BUILTIN_NAME, resolve
    from rpt_cli.training.run import _quiet_libraries

    if options.gpu and not torch.cuda.is_available():
        sys.exit("bench_train: --gpu needs a CUDA GPU")
    if options.threads:
        torch.set_num_threads(options.threads)
    _quiet_libraries(False)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        if options.model:
            model = options.model
        elif options.gpu:
            model = str(random_qwen2_model(work / "model", options.tokenizer or resolve(BUILTIN_NAME)))
        else:
            model = BUILTIN_NAME
        figures = compare(
            model,
            work,
            contexts=contexts,
            G=G,
            new_tokens=new_tokens,
            context_tokens=context_tokens,
            steps=options.steps,
            repeats=options.repeats,
            gradient_checkpointing=options.gpu,
            train_config=train_config,
        )
        figures["preset"] = options.preset
        figures["device"] = torch.cuda.get_device_name() if options.gpu else f"cpu x{torch.get_num_threads()} threads"
        if options.gpu and not options.model:
            figures["model"] = "random Qwen2-shaped (Qwen2.5-0.5B layer sizes)"
        print(json.dumps(figures, indent=2))
        if options.json:
            Path(options.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(
    model: str,
    work: Path,
    *,
    contexts: int,
    G: int,
    new_tokens: int,
    context_tokens: int,
    steps: int,
    repeats: int,
    gradient_checkpointing: bool,
    train_config: dict | None = None,
) -> dict:
    """Median step times of `rpt train` and of a bare TRL GRPOTrainer over `repeats` alternating
    runs per side (one warm-up step and `steps` measured steps each), in `work`. `train_config`:
    more rpt train settings for both sides (e.g. chat=False)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rpt_cli.console import stderr
    from rpt_cli.models import resolve
    from rpt_cli.training.config import TrainConfig, batch_plan, resolve_config
    from rpt_cli.training.run import build, grpo_args

    source = resolve(model)
    samples = work / "samples.jsonl"
    make_samples(AutoTokenizer.from_pretrained(source), samples, count=64, context_tokens=context_tokens)
    config = resolve_config(  # the answer format's own prompt defaults, as on the command line
        dict(
            samples=str(samples),
            model=model,
            num_completions=G,
            contexts_per_step=contexts,
            max_steps=steps + 1,
            save_steps=10_000,
            max_new_tokens=new_tokens,
            max_prompt_tokens=context_tokens + 400,
            dynamic_sampling_from_step=0,
            gradient_checkpointing=gradient_checkpointing,
            **(train_config or {}),
        )
    )
    force_length = {"min_new_tokens": new_tokens}
    results: dict[str, list[float]] = {"trl": [], "rpt": []}
    tokens: dict[str, list[float]] = {"trl": [], "rpt": []}
    peaks: dict[str, list[float]] = {"trl": [], "rpt": []}
    for repeat in range(repeats):
        for side in ("trl", "rpt"):
            out = work / f"{side}-{repeat}"
            clock = StepClock()
            held = ExitStack()  # rpt's run-folder lock, held while the run trains
            if side == "rpt":
                job = build(
                    TrainConfig(**{**config.as_dict(), "output": str(out)}), console=stderr, hold=held.enter_context
                )
                trainer = job.trainer
            else:
                trainer = bare_trainer(config, source, out, batch_plan(config, 1), grpo_args)
            trainer.generation_kwargs = {**(trainer.generation_kwargs or {}), **force_length}
            trainer.generation_config.update(**force_length)
            trainer.add_callback(clock)
            with held, PeakMemory() as memory:
                trainer.train()
            peaks[side].append(memory.peak_mb)
            times = step_times(clock)
            results[side] += times
            generated = contexts * G * new_tokens
            tokens[side] += [generated / t for t in times]
            print(
                f"bench_train: {side} run {repeat + 1}: "
                + ", ".join(f"{t:.2f}" for t in times)
                + f" s/step, peak +{memory.peak_mb:.0f} MB",
                file=sys.stderr,
            )
            del trainer, clock
            if side == "rpt":
                del job
            gc.collect()  # the next run starts without this one's model and optimizer around
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    trl_median, rpt_median = statistics.median(results["trl"]), statistics.median(results["rpt"])
    return {
        "model": model,
        "parameters": sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(source).parameters()),
        "contexts": contexts,
        "G": G,
        "new_tokens": new_tokens,
        "context_tokens": context_tokens,
        "steps_measured_per_side": len(results["trl"]),
        "trl_step_s": trl_median,
        "rpt_step_s": rpt_median,
        "ratio": rpt_median / trl_median,
        "trl_step_s_all": results["trl"],
        "rpt_step_s_all": results["rpt"],
        "trl_peak_memory_mb": max(peaks["trl"]),
        "rpt_peak_memory_mb": max(peaks["rpt"]),
        "settings": train_config or {},
        "trl_generated_tokens_per_s": statistics.median(tokens["trl"]),
        "rpt_generated_tokens_per_s": statistics.median(tokens["rpt"]),
    }


def bare_trainer(config, source: str, out: Path, plan, grpo_args):
    """TRL's GRPOTrainer with rpt's settings, prompts and reward, and nothing else of rpt's."""
    import datasets
    from transformers import AutoTokenizer, PrinterCallback
    from trl import GRPOTrainer

    from rpt_cli.generation.session import PromptSettings, prompt_builder
    from rpt_cli.prompts import load_template
    from rpt_cli.training.data import build_rows, read_samples
    from rpt_cli.training.run import build_reward

    tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    settings = PromptSettings(
        template=load_template(config.template),
        chat=config.chat,
        think_prefix=config.think_prefix,
        max_prompt_tokens=config.max_prompt_tokens,
        answer=config.answer,
    )
    builder = prompt_builder(tokenizer, settings)
    dataset = datasets.Dataset.from_list(build_rows(read_samples(config.samples), builder))
    reward, _ = build_reward(config, tokenizer)
    trainer = GRPOTrainer(
        model=source,
        reward_funcs=[reward],
        args=grpo_args(config, plan, out),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


if __name__ == "__main__":
    main()
