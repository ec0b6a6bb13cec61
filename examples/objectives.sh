#!/usr/bin/env bash
# Objectives side by side on the same samples (docs/objectives.md): the built-in SmolLM2-135M, then
# four runs from it, each one epoch over the same 64 training contexts (16 steps of 4) from the
# example corpus with the same learning rate and seed:
#   rpt-direct  RPT, direct answer format (the guess is one sampled token; Eq. 3 reward)
#   rpt-boxed   RPT, the paper's boxed format (think, then \boxed{}; few-shot prompt, 32 new tokens),
#               4 steps only (it earns no reward, see below)
#   ntp         continued next-token training on the same contexts and targets (the paper's baseline)
#   rlp         RLP's information-gain reward (16-token thoughts, EMA teacher)
# All five are evaluated on samples of the held-out documents (examples/data/val.jsonl): next-token
# accuracy (ntp), sampled guesses (direct, k=8) and mean information gain (gain, k=4).
# Needs the rpt command (make setup puts it in .venv/bin). About 30 minutes on 2 idle CPU cores.
#   bash examples/objectives.sh [OUT]        (default OUT: objectives-out)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-objectives-out}
mkdir -p "$out"
start=$(date +%s)
say() { echo "== $* ($(($(date +%s) - start)) s) ==" >&2; }

say "rpt entropy | rpt filter: one position with entropy > 1.0 per training document"
rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 --per-doc 1 -o "$out/train.jsonl"
say "rpt entropy | rpt filter: up to 3 positions with entropy > 0.5 per held-out document"
rpt entropy examples/data/val.jsonl | rpt filter --min 0.5 --per-doc 3 -o "$out/val.jsonl"

# one epoch: 16 steps of 4 contexts over the training contexts, in one seeded order
common=(--max-steps 16 --contexts-per-step 4 --save-steps 16 --save-total-limit 1 --learning-rate 2e-5
  --temperature 1.0 --dynamic-sampling-from-step 0 --no-gradient-checkpointing --seed 0)
train() {  # NAME, then its own options
  local name=$1
  shift
  say "rpt train: $name"
  rm -rf "${out:?}/$name"  # a new run each time: rpt train refuses a folder that holds another run
  rpt train "$out/train.jsonl" -o "$out/$name" "${common[@]}" "$@" > /dev/null
}
train rpt-direct --answer direct -G 8 --max-prompt-tokens 48
# the boxed format earns this model no reward (docs/evidence.md), so GRPO has no signal and its steps
# change nothing: 4 steps (the first 16 contexts) show that at a quarter of the cost
train rpt-boxed --answer boxed --template fewshot --no-chat -G 4 --max-prompt-tokens 320 --max-new-tokens 32 --max-steps 4
train ntp --objective ntp --max-prompt-tokens 48
train rlp --objective rlp -G 4 --max-prompt-tokens 48 --max-new-tokens 16

models=(-m smollm2-135m)
for name in rpt-direct rpt-boxed ntp rlp; do models+=(-m "$out/$name"); done
say "rpt eval: next-token accuracy (ntp) and sampled guesses (direct, k=8) on the held-out samples"
rpt eval "$out/val.jsonl" "${models[@]}" --mode ntp --mode reasoning --answer direct -G 8 --temperature 1.0 \
  --max-prompt-tokens 48 --max-context-tokens 48 --backend hf -o "$out/eval.jsonl"
say "rpt eval: mean information gain of 4 thoughts of 16 tokens per held-out sample"
rpt eval "$out/val.jsonl" "${models[@]}" --mode gain -G 4 --max-new-tokens 16 --temperature 1.0 \
  --max-prompt-tokens 48 --backend hf -o "$out/gain.jsonl"
say "the table and the plot"
python examples/objectives_report.py "$out" > "$out/table.md"
cat "$out/table.md" >&2
say "done: $out/table.md, $out/objectives.png"
