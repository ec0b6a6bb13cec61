#!/usr/bin/env bash
# Evidence for the direct answer format (docs/evidence.md): train the built-in SmolLM2-135M with
# RPT's reward in the direct format on the example corpus, then evaluate the model before
# training and every checkpoint on the held-out documents (examples/data/val.jsonl): ntp and
# sampled accuracy per split with 95 % Wilson intervals, and the compute fit of rpt scaling.
# About 25 minutes on 2 idle CPU cores. Writes everything under the folder given (runs/evidence).
#   PATH=.venv/bin:$PATH bash examples/direct_evidence.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/evidence}
mkdir -p "$out"
started=$(date +%s)
rpt entropy examples/data/corpus.jsonl -o "$out/scored.jsonl"
rpt filter "$out/scored.jsonl" --min 0.5 --per-doc 16 -o "$out/samples.jsonl"
rpt entropy examples/data/val.jsonl -o "$out/val_scored.jsonl"
rpt filter "$out/val_scored.jsonl" --min 0.5 --per-doc 10 -o "$out/val_samples.jsonl"
rm -rf "$out/run"
# 8 contexts x G=8 per step; contexts cut to their last 64 tokens; one new token is the guess;
# dynamic sampling from the first step swaps groups that all scored alike for fresh contexts
rpt train "$out/samples.jsonl" -o "$out/run" --answer direct -G 8 --contexts-per-step 8 --max-steps 40 \
  --save-steps 10 --learning-rate 1e-5 --temperature 1.0 --max-prompt-tokens 64 --no-gradient-checkpointing \
  --dynamic-sampling-from-step 1
rpt curves "$out/run" -o "$out/reward.png" > "$out/curve.jsonl"
# held out: the same 64-token contexts the policy was trained with, greedy (ntp) and 8 sampled
# guesses per context at the training temperature (direct)
eval_args=(--mode ntp --mode reasoning --answer direct -G 8 --temperature 1.0 --max-prompt-tokens 64
           --max-context-tokens 64 --backend hf)
rpt eval "$out/val_samples.jsonl" -m smollm2-135m "${eval_args[@]}" -o "$out/reports_base.jsonl"
checkpoints=()
for folder in $(ls -d "$out"/run/checkpoint-* | sort -V); do checkpoints+=(-m "$folder"); done
rpt eval "$out/val_samples.jsonl" "${checkpoints[@]}" "${eval_args[@]}" -o "$out/reports.jsonl"
python examples/reports_table.py "$out/reports_base.jsonl" "$out/reports.jsonl" > "$out/table.md"
rpt scaling "$out/reports.jsonl" --mode ntp -o "$out/scaling_ntp.png" > "$out/scaling_ntp.json" || true
rpt scaling "$out/reports.jsonl" --mode reasoning -o "$out/scaling_direct.png" > "$out/scaling_direct.json" || true
cat "$out/table.md"
echo "evidence: $(( ($(date +%s) - started) / 60 )) min; outputs in $out/" >&2
