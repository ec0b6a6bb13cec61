#!/usr/bin/env bash
# The generation node of `rpt train --vllm server`: a `trl vllm-serve` on this machine's GPUs,
# generating for the training nodes (examples/multinode/train.sh with VLLM_SERVER_HOST set to
# this machine's address). Start it first; the trainers wait up to --vllm-server-timeout for it.
#
#   MODEL=/shared/models/R1-Distill-Qwen-14B MAX_MODEL_LEN=12288 examples/multinode/vllm_server.sh
#
# Environment:
#   MODEL           the policy's starting weights: the same Hugging Face folder `rpt train --model`
#                   gets (required). TRL replaces the server's weights with the trained ones every step.
#   VLLM_PORT       HTTP port the trainers connect to (default 8000 = rpt train's --vllm-server-port)
#   TENSOR_PARALLEL GPUs per vLLM engine (default 1)
#   DATA_PARALLEL   vLLM engines (default: the GPUs torch sees / TENSOR_PARALLEL)
#   MAX_MODEL_LEN   prompt + completion tokens: at least rpt train's --max-prompt-tokens +
#                   --max-new-tokens (default 12288 = the paper's 4,096 + 8,192)
# More `trl vllm-serve` options may follow on the command line (e.g. --gpu_memory_utilization 0.9).
#
# Network: the trainers reach this machine on VLLM_PORT (HTTP); this machine's vLLM workers reach
# the first training machine on rpt train's --vllm-group-port (default 51216) for the weight
# updates (NCCL). Open both. TRL 1.16 says `trl vllm-serve` will go in TRL 2.0; it runs
# `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL ... --weight-transfer-config '{"backend": "nccl"}'`.
set -euo pipefail

python="${PYTHON:-python}"
model="${MODEL:?set MODEL to the policy model folder}"
tp="${TENSOR_PARALLEL:-1}"
if [[ -z "${DATA_PARALLEL:-}" ]]; then
    DATA_PARALLEL="$("$python" -c "import torch; print(max(1, torch.cuda.device_count() // $tp))")"
fi

exec "${TRL:-trl}" vllm-serve \
    --model "$model" \
    --host 0.0.0.0 \
    --port "${VLLM_PORT:-8000}" \
    --tensor_parallel_size "$tp" \
    --data_parallel_size "$DATA_PARALLEL" \
    --max_model_len "${MAX_MODEL_LEN:-12288}" \
    "$@"
