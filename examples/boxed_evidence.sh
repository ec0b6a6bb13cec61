#!/usr/bin/env bash
# Evidence for the paper's boxed format on the built-in SmolLM2-135M (docs/evidence.md, section 3):
# a cold start (--objective coldstart), then boxed RPT on fresh contexts of the example corpus,
# with every checkpoint evaluated on the held-out documents (examples/data/val.jsonl) against the
# cold-started model: boxed accuracy (8 sampled answers per context) and the greedy next token
# (ntp), per split, with paired differences; rpt scaling over the checkpoints; rpt patterns
# before and after. About 25 minutes on 2 idle CPU cores. Writes everything under the folder given.
#   PATH=.venv/bin:$PATH bash examples/boxed_evidence.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/boxed-evidence}
steps=${STEPS:-20}
mkdir -p "$out"
started=$(date +%s)
rpt entropy examples/data/corpus.jsonl -o "$out/scored.jsonl"
rpt filter "$out/scored.jsonl" --min 0.5 --per-doc 8 --seed 1 -o "$out/coldstart_samples.jsonl"
rpt filter "$out/scored.jsonl" --min 0.5 --per-doc 16 -o "$out/samples.jsonl"
rpt entropy examples/data/val.jsonl -o "$out/val_scored.jsonl"
rpt filter "$out/val_scored.jsonl" --min 0.5 --per-doc 5 -o "$out/val_samples.jsonl"
rm -rf "$out/run"
prompts=(--template direct --no-chat --max-prompt-tokens 48)
# the cold start: 512 examples the model makes itself, one epoch (kept when a finished one is there)
if [ ! -f "$out/coldstart/final/config.json" ]; then
  rm -rf "$out/coldstart"
  rpt train "$out/coldstart_samples.jsonl" -o "$out/coldstart" --objective coldstart "${prompts[@]}" \
    --contexts-per-step 8 --max-steps 64 --learning-rate 2e-4 --save-steps 1000 --no-gradient-checkpointing > /dev/null
fi
# boxed RPT: 8 fresh contexts x G=8 per step, the paper's temperature, a checkpoint every 10 steps
rpt train "$out/samples.jsonl" -o "$out/run" -m "$out/coldstart/final" --answer boxed "${prompts[@]}" \
  -G 8 --contexts-per-step 8 --max-steps "$steps" --save-steps 10 --learning-rate 1e-5 --temperature 0.8 \
  --max-new-tokens 32 --dynamic-sampling-from-step 0 --no-gradient-checkpointing > /dev/null
rpt curves "$out/run" -o "$out/reward.png" > "$out/curve.json"
eval_args=(--mode reasoning --mode ntp --answer boxed "${prompts[@]}" -G 8 --temperature 0.8 --max-new-tokens 32
           --max-context-tokens 48 --backend hf)
checkpoints=()
for folder in $(ls -d "$out"/run/checkpoint-* | sort -V); do checkpoints+=(-m "$folder"); done
# the cold-started model first: every later model's paired difference is against it
rpt eval "$out/val_samples.jsonl" -m "$out/coldstart/final" "${checkpoints[@]}" "${eval_args[@]}" \
  --details "$out/details.jsonl" -o "$out/reports.jsonl" 2> "$out/eval_table.txt"
cat "$out/eval_table.txt" >&2
python examples/reports_table.py "$out/reports.jsonl" > "$out/table.md"
rpt scaling "$out/reports.jsonl" --mode reasoning -o "$out/scaling.png" > "$out/scaling.json" || true
rpt patterns "$out/details.jsonl" -o "$out/patterns.png" > "$out/patterns.json"
cat "$out/table.md"
echo "evidence: $(( ($(date +%s) - started) / 60 )) min; outputs in $out/" >&2
