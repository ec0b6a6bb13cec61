#!/usr/bin/env bash
# The main job on the built-in model and the example corpus (run through `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-out
mkdir -p "$out"
echo "== rpt entropy: top-16 entropy of every position (built-in SmolLM2-135M) ==" >&2
rpt entropy examples/data/corpus.jsonl -o "$out/scored.jsonl"
echo "== rpt filter: positions with entropy > 1.0, at most 8 per document ==" >&2
rpt filter "$out/scored.jsonl" --min 1.0 --per-doc 8 -o "$out/samples.jsonl"
echo "== rpt train: a short GRPO run on those samples (examples/configs/cpu-demo.yaml) ==" >&2
rm -rf "$out/run"  # a new run each time: rpt train refuses a folder that holds another run
model=$(rpt train "$out/samples.jsonl" --config examples/configs/cpu-demo.yaml -o "$out/run")
echo "trained model: $model (steps in $out/run/metrics.jsonl)" >&2
echo "demo outputs are in $out/" >&2
