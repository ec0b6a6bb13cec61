#!/usr/bin/env bash
# The main job on the built-in model and the example corpus (run through `make demo`), in the
# paper's answer format: score the corpus, pick positions, give the model a cold start in the
# boxed format (it never answers that way on its own), train it with RPT's reward until the reward
# rises, then evaluate the base, cold-started and trained models on held-out documents and count
# the reasoning patterns of their thoughts. About 10 minutes on 2 idle CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-out
mkdir -p "$out"
# a new run each time: rpt train refuses a folder that holds another run
rm -rf "$out/coldstart" "$out/run"
echo "== rpt entropy: top-16 entropy of every position (built-in SmolLM2-135M) ==" >&2
rpt entropy examples/data/corpus.jsonl -o "$out/scored.jsonl"
echo "== rpt filter: 4 positions with entropy > 0.5 per document for the cold start; 8 with entropy > 1.0 (one a document) for RPT ==" >&2
rpt filter "$out/scored.jsonl" --min 0.5 --per-doc 4 -o "$out/coldstart_samples.jsonl"
rpt filter "$out/scored.jsonl" --min 1.0 --per-doc 1 -o "$out/samples.jsonl"
head -n 8 "$out/samples.jsonl" > "$out/train.jsonl"
echo "== rpt train --objective coldstart: the model's own candidates, then </think> and its first choice in \\boxed{} ==" >&2
rpt train "$out/coldstart_samples.jsonl" --config examples/configs/cpu-coldstart.yaml -o "$out/coldstart" > /dev/null
echo "== rpt train: GRPO in the boxed format from the cold-started model (examples/configs/cpu-demo-boxed.yaml) ==" >&2
model=$(rpt train "$out/train.jsonl" --config examples/configs/cpu-demo-boxed.yaml -m "$out/coldstart/final" -o "$out/run")
echo "== rpt curves: the mean reward per step on the training contexts ==" >&2
rpt curves "$out/run" -o "$out/reward.png" > "$out/curve.json"
echo "== rpt entropy | rpt filter on the held-out documents (examples/data/val.jsonl) ==" >&2
rpt entropy examples/data/val.jsonl | rpt filter --min 0.5 --per-doc 2 -o "$out/val_samples.jsonl"
echo "== rpt eval: held-out accuracy per split after the cold start, after RPT (paired against the cold start), and of the base model ==" >&2
# every model with the prompts the runs trained with (the 48-token context alone, no chat): the
# greedy next token (ntp), and 8 boxed answers sampled at the training temperature (reasoning)
rpt eval "$out/val_samples.jsonl" -m "$out/coldstart/final" -m "$out/run" -m smollm2-135m \
  --mode ntp --mode reasoning --answer boxed --template direct --no-chat -G 8 --temperature 0.8 \
  --max-new-tokens 32 --max-prompt-tokens 48 --max-context-tokens 48 --backend hf \
  --details "$out/eval_details.jsonl" -o "$out/eval.jsonl"
echo "== rpt patterns: the reasoning patterns of the thoughts, cold-started vs trained ==" >&2
rpt patterns "$out/eval_details.jsonl" -o "$out/patterns.png" > "$out/patterns.json"
# Say plainly what the runs show.
python - "$out/curve.json" "$out/eval.jsonl" "$out/run/metrics.jsonl" >&2 <<'PY'
import json, sys
curve = json.load(open(sys.argv[1], encoding="utf-8"))
reports = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
steps = [json.loads(line) for line in open(sys.argv[3], encoding="utf-8")]
answered = 1 - sum(s["no_prediction_share"] for s in steps) / len(steps)
varied = 1 - sum(s["zero_variance_share_before"] for s in steps) / len(steps)
print(f"boxed RPT: {answered:.0%} of the training completions held a boxed answer after </think>; "
      f"{varied:.0%} of the groups had rewards that differ (GRPO's signal).")
print(f"mean reward on the 8 training contexts: {curve['reward_start']:.2f} over the first {curve['window']} "
      f"steps -> {curve['reward_end']:.2f} over the last {curve['window']} (plot: demo-out/reward.png).")
for report in reports:
    if report["mode"] != "reasoning":
        continue
    answers = 1 - report["no_prediction_share"]
    print(f"held out, {report['model']}: answers in {answers:.0%} of completions, boxed accuracy "
          f"{report['accuracy']:.1%}, groups with reward variance {report['varied_share']:.0%}")
PY
echo "demo outputs are in $out/ (reward: $out/reward.png, patterns: $out/patterns.png; final model: $model)" >&2
