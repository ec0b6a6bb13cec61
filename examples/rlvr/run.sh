#!/usr/bin/env bash
# RLVR after RPT (the paper's Table 2): GRPO with a math verifier on question/answer data, starting
# from an RPT checkpoint, with TRL's own command line (`trl grpo`). docs/downstream.md explains.
#
#   bash examples/rlvr/run.sh MODEL DATA OUTPUT [more trl grpo options ...]
#
# MODEL   an rpt train run folder (its final model), a checkpoint-N folder of one, any Hugging Face
#         model folder, or rpt's built-in model name
# DATA    a folder holding train.jsonl, one question a line:
#         {"prompt": [{"role": "user", "content": "..."}], "answer": "42"}   (examples/rlvr/data)
# OUTPUT  TRL's output folder: checkpoint-N/ folders, then the final model
# RLVR_CONFIG  TRL's settings file (default: grpo.yaml beside this script; cpu.yaml for a CPU run)
# Options after OUTPUT go to `trl grpo` and override the settings file (e.g. --max_steps 10).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage="usage: run.sh MODEL DATA OUTPUT [trl grpo options]"
model=${1:?$usage}
data=${2:?$usage}
output=${3:?$usage}
shift 3
[ -f "$data/train.jsonl" ] || { echo "error: $data/train.jsonl: no such file (DATA is a folder holding train.jsonl)" >&2; exit 2; }
# the folder from_pretrained loads for MODEL, found as rpt eval and rpt downstream find it
folder=$("${PYTHON:-python}" - "$model" <<'PY'
import sys

from rpt_cli.console import cli_errors
from rpt_cli.downstream import model_folder

with cli_errors():
    print(model_folder(sys.argv[1]))
PY
)
# math_reward.py beside this script is the reward (TRL imports it by its dotted path)
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec trl grpo --config "${RLVR_CONFIG:-$here/grpo.yaml}" --model_name_or_path "$folder" \
    --dataset_name "$data" --output_dir "$output" --reward_funcs math_reward.math_reward "$@"
