#!/usr/bin/env bash
# The paper's data recipe (docs/data.md) on the example corpus, with the built-in model: documents
# made of a problem and its solution, a few of them held out by a seeded hash of their ids before
# anything is scored, entropy-filtered training samples, a short training run, and evaluation on
# the held-out documents only; then the check that catches the opposite mistake.
#   examples/data_recipe.sh [OUT]     (default OUT: recipe-out; a few minutes on 2 CPU cores)
# examples/data/problems.jsonl holds the Problem/Solution documents of examples/data/corpus.jsonl
# under OmniMATH's field names (problem, solution), so the same commands run on OmniMATH itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-recipe-out}
mkdir -p "$out"
echo "== rpt holdout: 8 of the 57 documents held out (the paper: 200 of OmniMATH's 4,428) ==" >&2
rpt holdout examples/data/problems.jsonl --documents 8 --seed 0 \
  --holdout-output "$out/val_docs.jsonl" -o "$out/train_docs.jsonl"
echo "== rpt entropy --text-template: each document is its problem, a blank line, its solution ==" >&2
rpt entropy "$out/train_docs.jsonl" --text-template '{problem}\n\n{solution}' -o "$out/train_scored.jsonl"
rpt entropy "$out/val_docs.jsonl" --text-template '{problem}\n\n{solution}' -o "$out/val_scored.jsonl"
echo "== rpt filter: training positions above 1.0 nats; held-out positions above 0.5 (easy/medium/hard) ==" >&2
rpt filter "$out/train_scored.jsonl" --min 1.0 --per-doc 1 -o "$out/train.jsonl"
rpt filter "$out/val_scored.jsonl" --min 0.5 --per-doc 4 -o "$out/val_samples.jsonl"
echo "== rpt train: 4 steps in the direct format (examples/configs/cpu-demo.yaml) ==" >&2
rm -rf "$out/run"  # a new run each time: rpt train refuses a folder that holds another run
rpt train "$out/train.jsonl" --config examples/configs/cpu-demo.yaml --max-steps 4 --save-steps 4 \
  -o "$out/run" > /dev/null
echo "== rpt eval on the held-out samples: no document of theirs was trained on, so no note ==" >&2
rpt eval "$out/val_samples.jsonl" --model "$out/run" --mode ntp -o "$out/eval.jsonl"
echo "== rpt eval on training samples, the mistake the hold-out prevents: rpt eval says so ==" >&2
head -n 8 "$out/train.jsonl" > "$out/mistake.jsonl"
rpt eval "$out/mistake.jsonl" --model "$out/run" --mode ntp > /dev/null
echo "recipe outputs are in $out/" >&2
