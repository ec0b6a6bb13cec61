#!/usr/bin/env bash
# rpt train on several machines with accelerate: run this same script on every training node.
#
#   NUM_NODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 examples/multinode/train.sh samples.jsonl -o /shared/runs/a \
#       --config examples/configs/paper.yaml --model /shared/models/R1-Distill-Qwen-14B
#   NUM_NODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 examples/multinode/train.sh ...the same arguments...
#
# Environment (the names torchrun and most schedulers use; SLURM's are read when these are unset):
#   NUM_NODES       training machines in the job (SLURM_NNODES; default 1)
#   NODE_RANK       this machine's rank, 0 .. NUM_NODES-1 (SLURM_NODEID; default 0)
#   MASTER_ADDR     address of the rank-0 machine, reachable from every node (default 127.0.0.1)
#   MASTER_PORT     a free TCP port on it (default 29500)
#   GPUS_PER_NODE   training processes per machine (default: the GPUs torch sees, at least 1)
#   ACCELERATE_CONFIG  accelerate config (default examples/configs/zero3.yaml: DeepSpeed ZeRO-3;
#                   examples/configs/fsdp.yaml: FSDP2). Its num_machines, machine_rank,
#                   main_process_ip/port and num_processes are overridden from the variables above.
#   VLLM_SERVER_HOST  when set, generation goes to a `trl vllm-serve` node at this address
#                   (examples/multinode/vllm_server.sh; --vllm server), port VLLM_SERVER_PORT (8000);
#                   its workers reach machine 0 on VLLM_GROUP_PORT (51216) for the weight updates
#   ACCELERATE_EXTRA  more `accelerate launch` options, e.g. "--cpu --mixed_precision no"
# Every other argument goes to `rpt train` unchanged. The samples file and the output folder must
# be on a file system every node sees: process 0 alone writes the run's files, every process reads
# the samples, and checkpoints are gathered by every process.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python}"

nodes="${NUM_NODES:-${SLURM_NNODES:-1}}"
rank="${NODE_RANK:-${SLURM_NODEID:-0}}"
addr="${MASTER_ADDR:-127.0.0.1}"
port="${MASTER_PORT:-29500}"
config="${ACCELERATE_CONFIG:-$root/examples/configs/zero3.yaml}"
if [[ -z "${GPUS_PER_NODE:-}" ]]; then
    GPUS_PER_NODE="$("$python" -c 'import torch; print(max(1, torch.cuda.device_count()))')"
fi
case "$nodes$rank$GPUS_PER_NODE$port" in
*[!0-9]*) echo "train.sh: NUM_NODES, NODE_RANK, GPUS_PER_NODE and MASTER_PORT must be whole numbers" >&2; exit 2 ;;
esac
if (( rank >= nodes )); then
    echo "train.sh: NODE_RANK $rank is not below NUM_NODES $nodes" >&2
    exit 2
fi

generation=()
if [[ -n "${VLLM_SERVER_HOST:-}" ]]; then
    generation=(--vllm server --vllm-server-host "$VLLM_SERVER_HOST" --vllm-server-port "${VLLM_SERVER_PORT:-8000}"
        --vllm-group-port "${VLLM_GROUP_PORT:-51216}")
fi

# shellcheck disable=SC2086  # ACCELERATE_EXTRA is a list of options
exec "$python" -m accelerate.commands.launch \
    --config_file "$config" \
    --num_machines "$nodes" \
    --machine_rank "$rank" \
    --main_process_ip "$addr" \
    --main_process_port "$port" \
    --num_processes "$((nodes * GPUS_PER_NODE))" \
    ${ACCELERATE_EXTRA:-} \
    -m rpt_cli train "$@" "${generation[@]}"
