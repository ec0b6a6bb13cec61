#!/usr/bin/env bash
# Every rpt path against the bare library doing the same work, on one GPU, in one run of at most
# 8 minutes: a randomly initialised Qwen2-shaped model of 0.5B parameters (nothing to download),
# entropy, rollout (hf, and vLLM where installed), one train step, eval ntp. Writes one JSON of
# ratios (docs/benchmarks.md):
#
#   benchmarks/gpu.sh                          # -> bench-gpu.json
#   benchmarks/gpu.sh -o /tmp/h200.json --parts entropy,eval
#   SIZE=tiny DEVICE=cpu benchmarks/gpu.sh     # the same code on a CPU, in minutes
#
# Needs torch with CUDA, transformers, trl, datasets and accelerate (rpt's own dependencies);
# vLLM is optional. Options after the script's name go to benchmarks/bench_gpu.py.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"  # only the CPU build reads it
export TOKENIZERS_PARALLELISM=false

# the budget: stop at LIMIT seconds (default 8 minutes); the JSON keeps every part finished by then
exec timeout --signal=INT --kill-after=30 "${LIMIT:-480}" \
    "$python" "$here/bench_gpu.py" --size "${SIZE:-0.5b}" --device "${DEVICE:-cuda}" "$@"
