"""rpt filter: input MB/s and peak memory as the input grows 10x (memory must stay flat).

    .venv/bin/python benchmarks/bench_filter.py            # 2,000 and 20,000 documents
    .venv/bin/python benchmarks/bench_filter.py --docs 500  # smaller, quicker

Documents are synthetic scored documents of about 2,000 characters (about 500 tokens) with
random entropies; each size runs `rpt filter --min 1.0 --per-doc 8` in a fresh process, output
to /dev/null. Peak memory is the child's maximum resident set size.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

WORDS = [
    "Let",
    " $x",
    "$",
    " be",
    " a",
    " real",
    " number",
    " such",
    " that",
    " \\frac{1}{2}",
    " =",
    " 3",
    ".",
    " Hence",
    " the",
    " answer",
    " is",
    " \\boxed{7}",
    " café",
    " 数学",
    "\n",
]


def make_doc(rng: random.Random, k: int) -> dict:
    pieces = [rng.choice(WORDS) for _ in range(rng.randint(350, 650))]
    text = "".join(pieces)
    offsets, pos = [0], 0
    for piece in pieces:
        pos += len(piece.encode("utf-8"))
        offsets.append(pos)
    entropy = [None] + [round(rng.random() * 2.77, 5) for _ in pieces[1:]]
    return {
        "id": f"doc-{k}",
        "text": text,
        "offsets": offsets,
        "entropy": entropy,
        "entropy_model": "synthetic",
        "entropy_top_k": 16,
    }


def write_corpus(path: Path, n: int) -> None:
    rng = random.Random(n)
    with open(path, "wb") as f:
        for k in range(n):
            f.write(orjson.dumps(make_doc(rng, k)) + b"\n")


def run_filter(path: Path) -> tuple[float, int]:
    """(seconds, peak RSS in MB) of one `rpt filter` run in a fresh process."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = [
        sys.executable,
        "-c",
        probe,
        sys.executable,
        "-m",
        "rpt_cli",
        "filter",
        str(path),
        "--min",
        "1.0",
        "--per-doc",
        "8",
    ]
    seconds, kib = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return float(seconds), int(kib) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000, help="documents of the smaller input (the larger has 10x)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.docs, 10 * args.docs):
            path = Path(tmp) / f"scored-{n}.jsonl"
            write_corpus(path, n)
            size_mb = path.stat().st_size / 1e6
            seconds, peak = run_filter(path)
            print(
                f"{n:>7,} documents, {size_mb:7.1f} MB: {seconds:6.1f} s, {size_mb / seconds:5.1f} MB/s, "
                f"peak memory {peak} MB"
            )


if __name__ == "__main__":
    main()
