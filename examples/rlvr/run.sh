#!/usr/bin/env bash
# RLVR after RPT (the paper's Table 2): GRPO with a math verifier on question/answer data, starting
# from an RPT checkpoint, with TRL's own command line (`trl grpo`). docs/downstream.md explains.
#
#   bash examples/rlvr/run.sh MODEL DATA OUTPUT [more trl grpo options ...]
#
# MODEL   an rpt train run folder (its final model), a checkpoint-N folder of one, any Hugging Face
#         model folder, or rpt's built-in model name
# DATA    a folder holding train.jsonl, one question a line (docs/records.md, "Question record"):
#         {"prompt": [{"role": "user", "content": "..."}], "answer": "42"}   (examples/rlvr/data)
# OUTPUT  TRL's output folder: checkpoint-N/ folders, then the final model
# RLVR_CONFIG  TRL's settings file (default: grpo.yaml beside this script; cpu.yaml for a CPU run)
# RLVR_REWARD  the reward function by dotted path (default: math_reward.math_reward, beside this
#              script); module.function or module:function, importable from here, the working
#              directory or PYTHONPATH
# PYTHON       the Python that has rpt and TRL (default: python)
# Options after OUTPUT go to `trl grpo` and override the settings file (e.g. --max_steps 10).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage="usage: run.sh MODEL DATA OUTPUT [trl grpo options]"
if [ $# -lt 3 ]; then echo "error: $usage" >&2; exit 2; fi
model=$1 data=$2 output=$3
shift 3
python=${PYTHON:-python}
# math_reward.py beside this script is importable by its dotted path, for the check and for TRL
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# every input checked before any model loads (one-line errors, exit status 2, as rpt's commands):
# prints the folder from_pretrained loads for MODEL and the reward as TRL names it
checked=$("$python" -m rpt_cli.rlvr "$model" "$data" "${RLVR_REWARD:-math_reward.math_reward}") || exit $?
{ read -r folder; read -r reward; } <<<"$checked"
# `trl grpo`, run by the same Python (the `trl` script may belong to another environment)
trl_cli='import sys; from trl.cli.main import main; sys.exit(main())'
exec "$python" -c "$trl_cli" grpo --config "${RLVR_CONFIG:-$here/grpo.yaml}" --model_name_or_path "$folder" \
    --dataset_name "$data" --output_dir "$output" --reward_funcs "$reward" "$@"
