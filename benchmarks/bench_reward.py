"""Benchmark the reward: in-process completions/s, and `rpt reward` end to end in records/s.

    .venv/bin/python benchmarks/bench_reward.py [--records 20000] [--group 8] [--size 1024]

(a) In-process, pinned to one core: extraction alone, and extraction plus Eq. 3 scoring through
    the TRL signature (`prefix_reward(completions, target=..., boundaries=...)`), on completions of
    about `--size` characters. Target: at least 200,000 completions/s.
(b) End to end: `rpt reward FILE -o OUT` as a subprocess (start-up included) on a generated rollout
    file of `--records` records with G = `--group` completions each, beside the time to merely read
    and write the same file with orjson in this process. Target: at least 5,000 records/s.

Data are generated from a fixed seed into a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpt_cli.reward import extract_prediction, prefix_reward  # noqa: E402

WORDS = [
    "Let",
    " $x$",
    " be",
    " the",
    " number",
    " such",
    " that",
    " \\frac{1}{2}",
    " +",
    " \\sqrt{2}",
    " Hence",
    " so",
    " we",
    " get",
    " maybe",
    " the next",
    " token",
    " is",
    " 日本",
    " é",
    "\n",
]
TARGETS = [
    (" 3$. Hence the", [2, 4, 5, 10, 14]),
    (" \\frac{1}{2}", [2, 6, 7, 8, 9, 10, 11, 12]),
    ("日本語 数学", [3, 9, 16]),
]


def make_completion(rng: random.Random, size: int, target: str, boundaries: list[int]) -> str:
    parts, length = ["<think>"], 7
    while length < size - 40:
        word = rng.choice(WORDS)
        parts.append(word)
        length += len(word)
    kind = rng.random()
    if kind < 0.7:  # a well-formed answer, right or wrong
        cut = rng.choice(boundaries)
        guess = target.encode("utf-8")[:cut].decode("utf-8", errors="ignore") if rng.random() < 0.5 else " 4"
        parts.append(f"</think> The next token is \\boxed{{{guess}}}.")
    elif kind < 0.85:  # truncated while thinking
        pass
    else:  # a box only inside the thinking, then no answer
        parts.append("\\boxed{ 3} </think> I cannot decide.")
    return "".join(parts)


def make_rollouts(path: Path, records: int, group: int, size: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for i in range(records):
            target, boundaries = TARGETS[i % len(TARGETS)]
            record = {
                "id": f"doc-{i // 10}@{i % 10}",
                "context": "so $x =",
                "target": target,
                "boundaries": boundaries,
                "split": "hard",
                "completions": [make_completion(rng, size, target, boundaries) for _ in range(group)],
                "finish_reasons": ["stop"] * group,
                "rollout": {"model": "bench", "template": "v0", "temperature": 0.8, "seed": 1},
            }
            out.write(orjson.dumps(record) + b"\n")
    return path.stat().st_size


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned"


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def in_process(size: int, count: int, group: int) -> None:
    rng = random.Random(1)
    samples = [TARGETS[(i // group) % len(TARGETS)] for i in range(count)]
    completions = [make_completion(rng, size, t, b) for t, b in samples]
    targets = [t for t, _ in samples]
    # fresh lists per completion, as TRL builds them from dataset rows
    boundaries = [list(b) for _, b in samples]
    mean_size = sum(map(len, completions)) / len(completions)

    extract_s = best_of(5, lambda: [extract_prediction(c) for c in completions])
    score_s = best_of(5, lambda: prefix_reward(completions, target=targets, boundaries=boundaries))
    print(f"(a) in process, {pin_to_one_core()}, {count:,} completions of {mean_size:,.0f} characters on average")
    print(f"    extraction only:                 {count / extract_s:>12,.0f} completions/s")
    print(f"    prefix_reward (extract + Eq. 3): {count / score_s:>12,.0f} completions/s   (target >= 200,000)")


def end_to_end(records: int, group: int, size: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    try:
        rollouts, scored, copied = folder / "rollouts.jsonl", folder / "scored.jsonl", folder / "copy.jsonl"
        nbytes = make_rollouts(rollouts, records, group, size)

        def orjson_copy():
            with open(rollouts, "rb") as src, open(copied, "wb") as dst:
                for line in src:
                    dst.write(orjson.dumps(orjson.loads(line)) + b"\n")

        rpt = shutil.which("rpt", path=str(Path(sys.executable).parent)) or "rpt"

        def rpt_reward():
            subprocess.run([rpt, "reward", str(rollouts), "-o", str(scored)], check=True, stderr=subprocess.DEVNULL)

        copy_s = best_of(3, orjson_copy)
        reward_s = best_of(3, rpt_reward)
        with open(scored, "rb") as f:
            lines = sum(1 for _ in f)
        assert lines == records, f"rpt reward wrote {lines} records, expected {records}"
        print(f"(b) end to end, {records:,} records x G={group} (~{size:,} characters each), {nbytes / 2**20:,.0f} MiB")
        print(f"    orjson read + write only: {copy_s:6.2f} s  {records / copy_s:>10,.0f} records/s")
        print(
            f"    rpt reward -o FILE:       {reward_s:6.2f} s  {records / reward_s:>10,.0f} records/s"
            f"   (target >= 5,000)"
        )
        print(f"    rpt reward / plain orjson copy: {reward_s / copy_s:.2f}x the time")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="rollout records for the end-to-end run")
    parser.add_argument("--group", type=int, default=8, help="completions per record (G)")
    parser.add_argument("--size", type=int, default=1024, help="characters per completion, about")
    parser.add_argument("--completions", type=int, default=100_000, help="completions for the in-process run")
    args = parser.parse_args()
    end_to_end(args.records, args.group, args.size)  # first, before this process pins itself to one core
    in_process(args.size, args.completions, args.group)


if __name__ == "__main__":
    main()
