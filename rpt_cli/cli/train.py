"""`rpt train`: reinforcement pre-training on TRL. The command only: the work is in the core modules."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from rpt_cli.cli.app import ANSWER_HELP, app, check_numbers, old_name_option, renamed
from rpt_cli.console import cli_errors, stderr
from rpt_cli.models import BUILTIN_NAME
from rpt_cli.training.config import (
    DEFAULTS as TD,  # the defaults the options' help quotes
)

TRAIN_EXAMPLES = (
    "rpt train samples.jsonl --config examples/configs/cpu-demo.yaml -o runs/demo\n\n"
    "  rpt train samples.jsonl -o runs/rpt1 --resume\n\n"
    "  rpt train samples.jsonl --config examples/configs/paper.yaml --model ./R1-Distill-Qwen-14B --vllm colocate -o runs/14b\n\n"
    "  accelerate launch --config_file examples/configs/zero3.yaml -m rpt_cli train samples.jsonl "
    "--config examples/configs/paper.yaml -o runs/14b"
)


def _opt(*names: str, help: str, **kwargs):
    return typer.Option(*names, help=help, show_default=False, **kwargs)


@app.command(epilog=f"Examples:  {TRAIN_EXAMPLES}")
def train(
    samples: Annotated[
        str | None,
        typer.Argument(metavar="SAMPLES", show_default=False, help="Samples file (the output of rpt filter)."),
    ] = None,
    output: Annotated[
        str | None,
        _opt(
            "--output",
            "-o",
            metavar="FOLDER",
            help=("Run folder: checkpoints, final/, config.yaml, metrics.jsonl, batches.jsonl."),
        ),
    ] = None,
    config: Annotated[
        str | None,
        _opt(
            "--config",
            metavar="FILE.yaml",
            help=(
                "Settings file with the options' names as keys (e.g. examples/configs/paper.yaml); "
                "options given here override it."
            ),
        ),
    ] = None,
    resume: Annotated[
        bool,
        _opt(
            "--resume",
            help=(
                "Continue the run in -o from its newest complete checkpoint (same data order, optimizer state); "
                "starts it when there is none."
            ),
        ),
    ] = False,
    model: Annotated[
        str | None,
        _opt(
            "--model",
            "-m",
            help=(
                f"Policy to train: '{BUILTIN_NAME}' (built in, the default), a Hugging Face folder, a .gguf file or a hub id."
            ),
        ),
    ] = None,
    objective: Annotated[
        str | None,
        _opt(
            "--objective",
            help=(
                "What to train for: rpt (the paper's RL with the next-token reward, the default), ntp (continued "
                "next-token training on the same samples, the paper's baseline), rlp (RL with the information-gain "
                "reward of thoughts, arXiv 2510.01265) or coldstart (supervised examples in the boxed format that the "
                "model makes itself: a thought naming its own next-token candidates, then the answer in \\boxed{}; "
                "run it before rpt on a model that does not answer in that format)."
            ),
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        _opt(
            "--ema-decay",
            help=(
                f"--objective rlp: decay of the EMA teacher that scores the no-thought baseline (default: {TD.ema_decay}, RLP's)."
            ),
        ),
    ] = None,
    coldstart_answer: Annotated[
        str | None,
        _opt(
            "--coldstart-answer",
            metavar="own|sample|truth",
            help=(
                "--objective coldstart: the boxed answer of each example: own (the model's own first choice), sample "
                "(drawn from the model's own next-token distribution: keeps the policy's spread, so GRPO afterwards "
                "finds groups whose rewards differ) or truth (the true next token, a STaR-style rationalisation) "
                f"(default: {TD.coldstart_answer})."
            ),
        ),
    ] = None,
    coldstart_candidates: Annotated[
        int | None,
        _opt(
            "--coldstart-candidates",
            metavar="K",
            help=(
                "--objective coldstart: how many of the model's most probable next tokens each thought names, with "
                f"their probabilities (default: {TD.coldstart_candidates})."
            ),
        ),
    ] = None,
    answer: Annotated[
        str | None,
        _opt(
            "--answer",
            metavar="boxed|direct",
            help=(
                ANSWER_HELP + f" Direct changes the defaults of --template, --chat and --max-new-tokens "
                f"(default: {TD.answer})."
            ),
        ),
    ] = None,
    template: Annotated[
        str | None,
        _opt(
            "--template",
            help=(
                f"Prompt template as in rpt rollout: v0 to v6 (the paper's), fenced, candidates, fewshot, direct or a file "
                f"(default: {TD.template}; direct with --answer direct)."
            ),
        ),
    ] = None,
    chat: Annotated[
        bool | None,
        _opt(
            "--chat/--no-chat",
            help=(
                "Wrap the prompt in the model's chat template when it has one (default: chat; no chat with --answer "
                "direct)."
            ),
        ),
    ] = None,
    think_prefix: Annotated[
        str | None,
        _opt(
            "--think-prefix",
            help=("Text that opens the model's answer, e.g. '<think>' plus a newline (none by default)."),
        ),
    ] = None,
    max_prompt_tokens: Annotated[
        int | None,
        _opt(
            "--max-prompt-tokens",
            help=(
                f"Longest prompt; longer contexts are cut from the left (default: {TD.max_prompt_tokens}, the paper's)."
            ),
        ),
    ] = None,
    reward: Annotated[
        str | None,
        _opt(
            "--reward",
            help=(
                "Reward function from the rpt reward registry: prefix (Eq. 3), first-token, dense or conditional-dense "
                f"(default: {TD.reward}); or a function of yours as module:function or module.function (TRL's "
                "convention, importable from the working directory or PYTHONPATH), called with TRL's arguments."
            ),
        ),
    ] = None,
    no_think: Annotated[
        bool | None,
        _opt(
            "--no-think/--think", help=("Take the last \\boxed{} anywhere, not only after </think> (default: think).")
        ),
    ] = None,
    correct: Annotated[
        str | None,
        _opt(
            "--correct",
            help=(f"dense variants: what counts as correct: first-token or prefix (default: {TD.correct})."),
        ),
    ] = None,
    unsolved_reward: Annotated[
        float | None,
        _opt(
            "--unsolved-reward",
            help=(
                f"conditional-dense: reward of every completion of a group without a correct one (default: {TD.unsolved_reward})."
            ),
        ),
    ] = None,
    num_completions: Annotated[
        int | None,
        _opt(
            "--num-completions",
            "-G",
            help=(f"Completions per context, G (default: {TD.num_completions}, the paper's)."),
        ),
    ] = None,
    num_generations_old: Annotated[int | None, old_name_option("-G/--num-completions", "--num-generations")] = None,
    contexts_per_step: Annotated[
        int | None,
        _opt(
            "--contexts-per-step",
            help=(
                f"Contexts per optimizer step, over all processes (default: {TD.contexts_per_step}, the paper's batch size)."
            ),
        ),
    ] = None,
    micro_batch_size: Annotated[
        int | None,
        _opt(
            "--micro-batch-size",
            help=(
                "Completions per forward/backward pass on each device; the rest is gradient accumulation (default: G)."
            ),
        ),
    ] = None,
    max_steps: Annotated[
        int | None, _opt("--max-steps", help=(f"Optimizer steps (default: {TD.max_steps}, the paper's)."))
    ] = None,
    learning_rate: Annotated[
        float | None,
        _opt("--learning-rate", "--lr", help=(f"Peak learning rate (default: {TD.learning_rate:g}, the paper's).")),
    ] = None,
    lr_scheduler: Annotated[
        str | None,
        _opt(
            "--lr-scheduler",
            help=(
                f"Learning-rate schedule (transformers' names: constant, linear, cosine, ...) (default: {TD.lr_scheduler})."
            ),
        ),
    ] = None,
    warmup_steps: Annotated[
        int | None, _opt("--warmup-steps", help=(f"Steps of linear warm-up (default: {TD.warmup_steps})."))
    ] = None,
    weight_decay: Annotated[
        float | None, _opt("--weight-decay", help=(f"AdamW weight decay (default: {TD.weight_decay}, the paper's)."))
    ] = None,
    adam_beta1: Annotated[
        float | None, _opt("--adam-beta1", help=f"Adam beta1 (default: {TD.adam_beta1}, the paper's).")
    ] = None,
    adam_beta2: Annotated[
        float | None, _opt("--adam-beta2", help=f"Adam beta2 (default: {TD.adam_beta2}, the paper's).")
    ] = None,
    max_grad_norm: Annotated[
        float | None,
        _opt("--max-grad-norm", help=(f"Gradient clipping by norm; 0 switches it off (default: {TD.max_grad_norm}).")),
    ] = None,
    beta: Annotated[
        float | None,
        _opt("--beta", help=(f"KL coefficient; 0 loads no reference model (default: {TD.beta}, the paper's).")),
    ] = None,
    epsilon: Annotated[
        float | None, _opt("--epsilon", help=(f"PPO clip ratio (default: {TD.epsilon}, the paper's)."))
    ] = None,
    loss_type: Annotated[
        str | None,
        _opt(
            "--loss-type",
            help=(f"TRL loss: grpo (the paper's), dr_grpo, dapo, bnpo, cispo, sapo (default: {TD.loss_type})."),
        ),
    ] = None,
    scale_rewards: Annotated[
        str | None,
        _opt(
            "--scale-rewards", help=(f"Advantage scaling: group (GRPO), batch or none (default: {TD.scale_rewards}).")
        ),
    ] = None,
    temperature: Annotated[
        float | None, _opt("--temperature", help=(f"Sampling temperature (default: {TD.temperature}, the paper's)."))
    ] = None,
    top_p: Annotated[float | None, _opt("--top-p", help=f"Nucleus sampling (1.0: off) (default: {TD.top_p}).")] = None,
    top_k: Annotated[int | None, _opt("--top-k", help=f"Top-k sampling (0: off) (default: {TD.top_k}).")] = None,
    max_new_tokens: Annotated[
        int | None,
        _opt(
            "--max-new-tokens",
            help=(
                f"Longest completion; longer ones are cut and counted as truncated (default: {TD.max_new_tokens}, "
                "the paper's; 1 with --answer direct)."
            ),
        ),
    ] = None,
    max_completion_tokens_old: Annotated[
        int | None, old_name_option("--max-new-tokens", "--max-completion-tokens")
    ] = None,
    dynamic_sampling_from_step: Annotated[
        int | None,
        _opt(
            "--dynamic-sampling-from-step",
            help=(
                "From this step on, replace groups whose G rewards are all equal with fresh contexts; 0: never "
                f"(default: {TD.dynamic_sampling_from_step}, the paper's)."
            ),
        ),
    ] = None,
    dynamic_sampling_max_rounds: Annotated[
        int | None,
        _opt(
            "--dynamic-sampling-max-rounds",
            help=(
                f"Refill rounds per step at most before training on what there is (default: {TD.dynamic_sampling_max_rounds})."
            ),
        ),
    ] = None,
    vllm: Annotated[
        str | None,
        _opt(
            "--vllm",
            help=(
                "Generate with vLLM: colocate (on the training GPUs) or server (trl vllm-serve elsewhere); "
                "default: transformers generate."
            ),
        ),
    ] = None,
    vllm_server_host: Annotated[
        str | None,
        _opt("--vllm-server-host", help=(f"--vllm server: host of trl vllm-serve (default: {TD.vllm_server_host}).")),
    ] = None,
    vllm_server_port: Annotated[
        int | None,
        _opt("--vllm-server-port", help=(f"--vllm server: port of trl vllm-serve (default: {TD.vllm_server_port}).")),
    ] = None,
    vllm_server_timeout: Annotated[
        float | None,
        _opt(
            "--vllm-server-timeout",
            help=(f"--vllm server: seconds to wait for the server to come up (default: {TD.vllm_server_timeout:g})."),
        ),
    ] = None,
    vllm_group_port: Annotated[
        int | None,
        _opt(
            "--vllm-group-port",
            help=(
                "--vllm server: port on the first training machine where the server joins the weight updates "
                f"(default: {TD.vllm_group_port})."
            ),
        ),
    ] = None,
    vllm_gpu_memory_utilization: Annotated[
        float | None,
        _opt(
            "--vllm-gpu-memory-utilization",
            help=(f"--vllm colocate: share of GPU memory for vLLM (default: {TD.vllm_gpu_memory_utilization})."),
        ),
    ] = None,
    vllm_tensor_parallel_size: Annotated[
        int | None,
        _opt(
            "--vllm-tensor-parallel-size",
            help=(f"--vllm colocate: GPUs each vLLM engine spans (default: {TD.vllm_tensor_parallel_size})."),
        ),
    ] = None,
    save_steps: Annotated[
        int | None,
        _opt("--save-steps", help=(f"Write a checkpoint every N steps (default: {TD.save_steps})."), metavar="N"),
    ] = None,
    save_total_limit: Annotated[
        int | None,
        _opt("--save-total-limit", help=("Keep only the newest N complete checkpoints (default: all)."), metavar="N"),
    ] = None,
    seed: Annotated[
        int | None,
        _opt("--seed", help=(f"Seed of the data order, dynamic-sampling draws and sampling (default: {TD.seed}).")),
    ] = None,
    dtype: Annotated[
        str | None,
        _opt(
            "--dtype",
            help=(
                "Parameter dtype: auto (float32, with bfloat16 autocast on a GPU), float32 or bfloat16 (default: auto)."
            ),
        ),
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        _opt(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help=(
                "Recompute activations in the backward pass: less memory, about 20% slower (default: on, as in TRL)."
            ),
        ),
    ] = None,
    shared_prompt: Annotated[
        bool | None,
        _opt(
            "--shared-prompt/--no-shared-prompt",
            help=(
                "Run each context's prompt once for its G completions, in generation and in the training "
                "passes, with micro-batches ordered by context: same log-probabilities and gradient, less work "
                "(default: on where exact, see docs/train.md)."
            ),
        ),
    ] = None,
    report_to: Annotated[
        str | None, _opt("--report-to", help=("Also log to tensorboard or wandb (when installed) (default: none)."))
    ] = None,
    trust_remote_code: Annotated[
        bool | None, _opt("--trust-remote-code", help=("Allow model code from the hub to run (off unless asked)."))
    ] = None,
    skip_bad: Annotated[
        bool | None,
        _opt(
            "--skip-bad",
            help=(
                "Skip malformed samples, and samples whose boundaries cannot be re-derived in the policy's tokens, "
                "(counted on standard error) instead of stopping."
            ),
        ),
    ] = None,
) -> None:
    """Reinforcement pre-training: GRPO on TRL with the RPT reward, from samples to a trained model.

    Defaults are the paper's (Table 5): G=8, 256 contexts per step, learning rate 1e-6, KL 0, clip 0.2, weight decay 0.01, prompts up to 4,096 and completions up to 8,192 tokens, 1,000 steps, dynamic sampling from step 500. Prompts come from the same code as rpt rollout and rewards from the same registry as rpt reward.

    Progress goes to standard error, one line per step; the path of the final model goes to standard output.
    """
    options = {key: value for key, value in locals().items() if key not in ("config", "resume")}
    old_names = {key: options.pop(key) for key in ("num_generations_old", "max_completion_tokens_old")}
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.training.config import resolve_config
        from rpt_cli.training.run import end_processes
        from rpt_cli.training.run import train as run_training

        options["num_completions"] = renamed(
            num_completions,
            old_names["num_generations_old"],
            new="-G/--num-completions",
            old="--num-generations",
            default=None,
            command="train",
        )
        options["max_new_tokens"] = renamed(
            max_new_tokens,
            old_names["max_completion_tokens_old"],
            new="--max-new-tokens",
            old="--max-completion-tokens",
            default=None,
            command="train",
        )
        settings = resolve_config(options, config)
        final = run_training(settings, resume=resume, console=stderr)
        end_processes()
        if os.environ.get("RANK", "0") == "0":
            sys.stdout.write(f"{final}\n")
