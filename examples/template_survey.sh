#!/usr/bin/env bash
# How the built-in SmolLM2-135M does in the paper's boxed answer format, per prompt template
# (docs/evidence.md): 32 positions of the example corpus with entropy > 1.0 (one per document),
# G=4 completions of up to 64 tokens at temperature 0.8, scored by Eq. 3 with the paper's rule
# (the last box after </think>) and with --no-think (the last box anywhere).
# About 18 minutes on 2 idle CPU cores.
#   PATH=.venv/bin:$PATH bash examples/template_survey.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/templates}
mkdir -p "$out"
rpt entropy examples/data/corpus.jsonl | rpt filter --min 1.0 --per-doc 1 -o "$out/all.jsonl"
head -n 32 "$out/all.jsonl" > "$out/samples.jsonl"
for spec in "v0 --chat" "v0 --no-chat" "fenced --chat" "candidates --chat" "fewshot --no-chat"; do
  set -- $spec
  name="$1${2/--/-}"
  rpt rollout "$out/samples.jsonl" --template "$1" "$2" -G 4 --max-new-tokens 64 --max-prompt-tokens 384 \
    --temperature 0.8 --backend hf -o "$out/$name.jsonl"
  rpt reward "$out/$name.jsonl" -o "$out/$name.think.jsonl"
  rpt reward "$out/$name.jsonl" --no-think -o "$out/$name.anywhere.jsonl"
done
python - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| template | chat | completions | answer after </think> | answer anywhere | correct (after </think>) | correct (anywhere) | contexts solved, pass@4 (anywhere) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name in ("v0-chat", "v0-no-chat", "fenced-chat", "candidates-chat", "fewshot-no-chat"):
    rows = {rule: [json.loads(l) for l in open(out / f"{name}.{rule}.jsonl", encoding="utf-8")]
            for rule in ("think", "anywhere")}
    n = sum(len(r["completions"]) for r in rows["think"])
    answered = {rule: sum(p is not None for r in rs for p in r["predictions"]) / n for rule, rs in rows.items()}
    correct = {rule: sum(x for r in rs for x in r["rewards"]) / n for rule, rs in rows.items()}
    solved = sum(any(r["rewards"]) for r in rows["anywhere"])
    template, chat = name.split("-", 1)
    print(f"| {template} | {'yes' if chat == 'chat' else 'no'} | {n} | {answered['think']:.1%} | {answered['anywhere']:.1%} "
          f"| {correct['think']:.1%} | {correct['anywhere']:.1%} | {solved}/{len(rows['anywhere'])} |")
PY
