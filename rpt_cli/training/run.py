"""`rpt train` from settings to a trained model: check everything cheap first, then load, build
the TRL trainer, train, and leave the output folder in a state `--resume` can always continue.

Output folder:
    .lock               held by the one process writing the run (lock.py): a second writer is refused
    config.yaml         the resolved settings (reads back with --config), paths absolute
    run.json            what the run was started with: samples fingerprint, config.yaml's digest,
                        batch plan, versions
    documents.json      the documents of its samples, as digests of their ids (holdout.py)
    metrics.jsonl       one line per step (see `log.RunLog`)
    batches.jsonl       one line per step: the sample ids drawn, refilled and dropped
    checkpoint-N/       Hugging Face checkpoints with optimizer state, marked complete
    final/              the final model (model, tokenizer, generation config)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rpt_cli.errors import UsageError
from rpt_cli.training import objectives
from rpt_cli.training.checkpoints import (
    FINAL,
    completed_step,
    mark_complete,
    remove_incomplete,
    replace_folder,
    write_atomic,
)
from rpt_cli.training.config import (
    BatchPlan,
    TrainConfig,
    batch_plan,
    check_config,
    dump_config,
    world_size,
)
from rpt_cli.training.data import (
    DataOrder,
    Samples,
    align_samples,
    prompt_rows,
    read_samples,
)
from rpt_cli.training.folder import (
    CONFIG_FILE,
    RUN_FILE,
    OutputPlan,
    file_digest,
    output_folder,
    plan_output,
    with_absolute_paths,
)
from rpt_cli.training.lock import run_folder_lock
from rpt_cli.training.log import METRICS_FILE, RunLog, _format_duration


def flops_at(checkpoint: Path | None) -> float:
    """The cumulative compute estimate a checkpoint's trainer state recorded last."""
    if checkpoint is None:
        return 0.0
    try:
        history = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    except (OSError, ValueError, KeyError):
        return 0.0
    values = [entry["rpt/flops"] for entry in history if "rpt/flops" in entry]
    return float(values[-1]) if values else 0.0


def grpo_args(config: TrainConfig, plan: BatchPlan, folder: Path, stop_ids: list[int] | None = None):
    """TRL's GRPOConfig for these settings (the mapping docs/train.md tabulates). `stop_ids`: the
    tokens that end a completion (`generation_stops`), handed to vLLM with --vllm."""
    import torch
    from trl import GRPOConfig

    from rpt_cli.models import checkpointing_argument

    cuda = torch.cuda.is_available()
    dtype = "float32" if config.dtype == "auto" else config.dtype
    vllm = {}
    if config.vllm is not None:
        vllm = dict(
            use_vllm=True,
            vllm_mode=config.vllm,
            vllm_server_host=config.vllm_server_host,
            vllm_server_port=config.vllm_server_port,
            vllm_server_timeout=config.vllm_server_timeout,
            vllm_group_port=config.vllm_group_port,
            vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            vllm_tensor_parallel_size=config.vllm_tensor_parallel_size,
            vllm_max_model_length=config.max_prompt_tokens + config.max_new_tokens,
        )
        if stop_ids:
            # TRL hands these to vLLM's sampling (colocate) or to the server's requests (server);
            # without them vLLM stops at the model's own end-of-sequence tokens only
            vllm["generation_kwargs"] = {"stop_token_ids": list(stop_ids)}
    return GRPOConfig(
        output_dir=str(folder),
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        num_generations=config.num_completions,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        max_grad_norm=config.max_grad_norm,
        beta=config.beta,
        epsilon=config.epsilon,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=None,  # rotation is ours
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        model_init_kwargs={"dtype": dtype},
        **checkpointing_argument(config.gradient_checkpointing),
        trust_remote_code=config.trust_remote_code,
        report_to="none" if config.report_to == "none" else [config.report_to],
        disable_tqdm=True,
        log_completions=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # causal LMs use every parameter in every pass
        **vllm,
    )


def build_reward(config: TrainConfig, tokenizer):
    """The reward from the one registry `rpt reward` and `rpt eval` use, with the options its
    variant needs (the dense variants score with the policy being trained), or the user's own
    function named by dotted path."""
    from rpt_cli.reward import NEEDS_MODEL, NEEDS_TOKENIZER, get_reward_function
    from rpt_cli.reward.user import is_user_reward, user_reward
    from rpt_cli.training.trainer import PolicyProbability

    options: dict = {"require_think": not config.no_think, "answer": config.answer}
    if is_user_reward(config.reward):  # the user's function, as TRL calls it; rpt's reading of answers for metrics
        return user_reward(config.reward, extract=get_reward_function("prefix", **options).extract), None
    probability = None
    if config.reward in NEEDS_TOKENIZER:
        options["tokenizer"] = tokenizer
    if config.reward in NEEDS_MODEL:
        probability = PolicyProbability(tokenizer)
        options.update(probability=probability, correct=config.correct)
        if config.reward == "conditional-dense":
            options["unsolved_reward"] = config.unsolved_reward
    try:
        reward_fn = get_reward_function(config.reward, **options)
    except ValueError as exc:
        raise UsageError(f"--reward {config.reward}: {exc}") from None
    reward_fn.read_generated_ids(tokenizer)  # score the bytes the policy wrote, not TRL's decoded text
    return reward_fn, probability


def _quiet_libraries(uses_vllm: bool) -> None:
    import logging
    import warnings

    if not uses_vllm:  # TRL imports vLLM when installed; its start-up notes do not concern this run
        logging.getLogger("vllm").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
    from rpt_cli.models import quiet_transformers

    quiet_transformers()
    for name in ("trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    # SFTTrainer maps its dataset with a progress bar per pass ("Building labels ..."): the
    # per-step line is rpt's report of progress
    datasets.disable_progress_bars()


def first_process() -> bool:
    """Rank 0 of a multi-process run (`accelerate launch`, `torchrun`), or a run of one process."""
    return os.environ.get("RANK", "0") == "0"


def prepare(config: TrainConfig, *, resume: bool, hold: Callable) -> tuple[BatchPlan, Samples, OutputPlan]:
    """Every check that needs no model: settings, batch plan, samples file, output folder. The
    folder's lock is taken (`hold`: an ExitStack's enter_context) before the folder is read."""
    check_config(config)
    processes = world_size()
    if processes > 1 and config.objective == objectives.RLP:
        raise UsageError(
            "--objective rlp scores thoughts with the policy and keeps an EMA copy of it, which is supported "
            "on one process only; use --objective rpt or ntp with several processes"
        )
    if processes > 1 and config.objective == objectives.RPT and config.reward in ("dense", "conditional-dense"):
        raise UsageError(
            f"--reward {config.reward} scores with the policy itself, which is supported on one process "
            "only; use prefix or first-token with several processes"
        )
    plan = batch_plan(config, processes)
    if config.vllm == "server":
        check_server_mode()
    samples = read_samples(config.samples, skip_bad=config.skip_bad)
    hold(run_folder_lock(output_folder(config), f"-o {config.output}", take=first_process()))
    return plan, samples, plan_output(config, samples, resume=resume)


def generation_stops(tokenizer, source: str) -> list[int]:
    """The tokens a completion ends at, as `rpt rollout` ends it: the end-of-sequence tokens of the
    tokenizer and of the model's generation config, and the chat template's end-of-turn token.
    RPTTrainer gives them to transformers' `generate`; with vLLM they travel in TRL's
    `generation_kwargs` (`grpo_args`)."""
    from transformers import GenerationConfig

    from rpt_cli.generation.base import stop_token_ids

    try:
        generation_config = GenerationConfig.from_pretrained(source)
    except OSError:  # a model folder without generation_config.json
        generation_config = None
    return stop_token_ids(tokenizer, generation_config)


def check_new_tokens(config: TrainConfig, source: str) -> None:
    """Refuse completions longer than the model has positions for, whatever the prompt (from the
    model's configuration, before its weights load). A prompt and completion that only together
    exceed them get a note (`_announce`): prompts are often far shorter than the limit."""
    from rpt_cli.forward import config_max_positions

    if config.objective in objectives.SUPERVISED:  # nothing is generated
        return
    positions = config_max_positions(source, trust_remote_code=config.trust_remote_code)
    if positions and config.max_new_tokens >= positions:
        raise UsageError(
            f"--max-new-tokens {config.max_new_tokens}: the model has {positions} positions, which a prompt "
            f"of at least one token and the completion share; use at most {positions - 1}"
        )


def check_server_mode() -> None:
    """TRL (1.16) pushes the trained weights to a `trl vllm-serve` server over vLLM's NCCL
    weight-transfer engine and refuses any other device when the trainer starts
    (`VLLMClient.init_communicator`: NotImplementedError for 'cpu'), after the model has loaded.
    Say so before anything loads. Generation through the server alone would work on a CPU, but a
    policy whose server never sees its updates is not on-policy GRPO."""
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "--vllm server needs CUDA GPUs for training: TRL sends the trained weights to the vLLM server "
            "over NCCL, which this machine (no CUDA device) cannot do; train without --vllm here"
        )


@dataclass
class Job:
    """A run ready to train: the trainer and where it resumes from."""

    trainer: object
    output: OutputPlan
    started: float

    def run(self, console) -> Path:
        trainer, folder = self.trainer, self.output.folder
        resume_from = self.output.resume_from
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        final = save_final(trainer, folder)
        if trainer.accelerator.is_main_process:
            elapsed = time.perf_counter() - self.started
            console.print(
                f"train: done: step {trainer.state.global_step} in {_format_duration(elapsed)}; "
                f"final model {final}; metrics {folder / METRICS_FILE}",
                markup=False,
            )
        return final


def _process_locks():
    from contextlib import ExitStack

    return ExitStack()


# run-folder locks of jobs built without `hold`: released when the process ends
_PROCESS_LOCKS = _process_locks()


def train(config: TrainConfig, *, resume: bool = False, console) -> Path:
    """Run `rpt train`; returns the folder of the final model. The run folder's lock is held
    from before the folder is read until the run ends."""
    from contextlib import ExitStack

    with ExitStack() as held:
        job = build(config, resume=resume, console=console, hold=held.enter_context)
        if job is None:
            return Path(config.output).expanduser() / FINAL
        return job.run(console)


def build(config: TrainConfig, *, resume: bool = False, console, hold: Callable | None = None) -> Job | None:
    """Check, load and set up everything up to the first step; None when the run is already done.
    `hold` keeps the run folder's lock until the caller's block ends; without it (a caller from
    Python that trains the job itself) the lock is held as long as this process lives."""
    if hold is None:
        hold = _PROCESS_LOCKS.enter_context
    plan, samples, output = prepare(config, resume=resume, hold=hold)
    folder = output.folder
    if output.finished:
        console.print(
            f"train: {folder} already holds the final model of step {output.resume_step} "
            f"(--max-steps {config.max_steps}); nothing to do",
            markup=False,
        )
        return None
    _quiet_libraries(config.vllm is not None)
    from rpt_cli.boundaries import PolicyTokenizer
    from rpt_cli.generation.session import PromptSettings, prompt_builder
    from rpt_cli.models import display_name, load_tokenizer, resolve
    from rpt_cli.prompts import load_template

    started = time.perf_counter()
    source = resolve(config.model)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code, source=source)
    tokenizer.padding_side = "left"
    # Eq. 3 judges the policy's own tokens: boundaries made with another tokenizer are re-derived
    samples, alignment = align_samples(
        samples, PolicyTokenizer(tokenizer, display_name(config.model), config.model), skip_bad=config.skip_bad
    )
    builder = None  # --objective ntp trains on the samples' text: no prompts
    if config.objective != objectives.NTP:
        builder = prompt_builder(
            tokenizer,
            PromptSettings(
                template=load_template(config.template),
                chat=config.chat,
                think_prefix=config.think_prefix,
                max_prompt_tokens=config.max_prompt_tokens,
                answer=config.answer,
            ),
        )
        check_new_tokens(config, source)
        samples, rows = prompt_rows(samples, builder, skip_bad=config.skip_bad)  # refused here, before any write
    import datasets

    if config.objective in objectives.SUPERVISED:
        from rpt_cli.training.ntp import sft_args

        args = sft_args(config, plan, folder, completion_only=config.objective == objectives.COLDSTART)
    else:
        args = grpo_args(config, plan, folder, generation_stops(tokenizer, source) if config.vllm else None)
    state = args.distributed_state
    state.wait_for_everyone()  # every process has checked the folder before the first one writes to it
    log = None
    if state.is_main_process:
        log = RunLog(folder, config.max_steps, console, show_truncated=config.answer != "direct")
        for note in alignment.notes():
            console.print(f"train: note: {note}", markup=False)
        samples.stats.report(console)
        from rpt_cli.holdout import training_documents

        documents = training_documents(samples.path, samples.lines)  # what rpt eval checks its samples against
        for note in documents.notes():
            console.print(f"train: note: {note}", markup=False)
        _prepare_folder(config, plan, samples, output, source, log, console, alignment)
        if not output.resuming:
            documents.write(folder)
    state.wait_for_everyone()
    from transformers import PrinterCallback, ProgressCallback

    order = DataOrder(len(samples), config.contexts_per_step, config.seed)
    probability = None
    if config.objective == objectives.NTP:
        from rpt_cli.training.ntp import NTPTrainer, document_sequences

        # the documents the samples come from, each token once a pass (ntp.py)
        sequences = document_sequences(samples, tokenizer, config.max_prompt_tokens)
        if log is not None:
            console.print(f"train: ntp trains {sequences.describe()}", markup=False)
        trainer = NTPTrainer(
            model=source,
            args=args,
            train_dataset=datasets.Dataset.from_list(sequences.rows),
            processing_class=tokenizer,
            data_order=DataOrder(len(sequences.rows), config.contexts_per_step, config.seed),
            sample_ids=sequences.ids,
            run_log=log,
            flops_start=flops_at(output.resume_from),
            save_total_limit=config.save_total_limit,
        )
    elif config.objective == objectives.COLDSTART:
        from rpt_cli.training.coldstart import build_trainer

        trainer = build_trainer(
            config,
            args,
            samples,
            tokenizer,
            builder,
            source,
            folder=folder,
            order=order,
            log=log,
            resuming=output.resuming,
            end_ids=generation_stops(tokenizer, source)[:1],
            console=console,
            flops_start=flops_at(output.resume_from),
        )
    else:
        common = dict(
            model=source,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            data_order=order,
            dynamic_sampling_from_step=config.dynamic_sampling_from_step,
            dynamic_sampling_max_rounds=config.dynamic_sampling_max_rounds,
            run_log=log,
            flops_start=flops_at(output.resume_from),
            save_total_limit=config.save_total_limit,
            prompt_encoder=builder.encode,
            shared_prompt=config.shared_prompt,
        )
        if config.objective == objectives.RLP:
            from rpt_cli.training.rlp import EmaTeacher, InformationGain, InformationGainReward
            from rpt_cli.training.trainer import RLPTrainer

            reward = InformationGainReward(
                InformationGain(tokenizer, builder, max_context_tokens=config.max_prompt_tokens),
                EmaTeacher(config.ema_decay),
                resume_from=output.resume_from,
            )
            trainer = RLPTrainer(reward_funcs=[reward], rlp_reward=reward, **common)
        else:
            from rpt_cli.training.trainer import RPTTrainer

            reward_fn, probability = build_reward(config, tokenizer)
            trainer = RPTTrainer(reward_funcs=[reward_fn], extract=getattr(reward_fn, "extract", None), **common)
    for callback in (PrinterCallback, ProgressCallback):  # stdout is for data; RunLog reports progress
        trainer.remove_callback(callback)
    if probability is not None:
        probability.bind(trainer.model)
    if state.is_main_process:
        _announce(console, config, plan, samples, output, trainer, time.perf_counter() - started)
    return Job(trainer, output, started)


def _prepare_folder(config, plan, samples, output, source, log: RunLog, console, alignment) -> None:
    """Main process: clear what an interrupted run left half done, record a new run's settings."""
    folder = output.folder
    folder.resolve().mkdir(parents=True, exist_ok=True)  # -o at a symlink: the link stays, its target is made
    if output.restarted:
        console.print(
            f"train: note: {folder} held a run that ended before its first step; starting it afresh", markup=False
        )
    for path in remove_incomplete(folder):
        console.print(f"train: removed {path.name}: an incomplete checkpoint (interrupted while saving)", markup=False)
    if (folder / FINAL).exists() and completed_step(folder / FINAL) is None:
        shutil.rmtree(folder / FINAL, ignore_errors=True)
    log.keep_until(output.resume_step)
    if output.resuming:
        return
    import transformers
    import trl

    from rpt_cli.models import display_name

    # absolute paths: `--config RUN/config.yaml --resume` works from any directory
    dump_config(
        with_absolute_paths(config), folder / CONFIG_FILE, header="# rpt train settings (reads back with --config)"
    )
    write_atomic(
        folder / RUN_FILE,
        json.dumps(
            {
                "samples": os.path.abspath(samples.path),
                "samples_sha256": samples.sha256,
                "config_sha256": file_digest(folder / CONFIG_FILE),  # an edited config.yaml is refused
                "samples_count": len(samples),
                "objective": config.objective,
                "tokenizer": alignment.as_fields(),
                "model": display_name(config.model),
                "model_source": source,
                "processes": plan.processes,
                "micro_batch": plan.micro_batch,
                "gradient_accumulation_steps": plan.gradient_accumulation_steps,
                "completions_per_step": plan.completions,
                "shared_prompt": config.shared_prompt,
                "versions": {"transformers": transformers.__version__, "trl": trl.__version__},
            },
            indent=2,
        )
        + "\n",
    )


def _announce(console, config, plan, samples, output, trainer, seconds) -> None:
    where = (
        f"resuming from {output.resume_from.name}"
        if output.resume_from
        else "resuming from step 0 (no complete checkpoint yet)"
        if output.resuming
        else "new run"
    )
    dynamic = f"from step {config.dynamic_sampling_from_step}" if config.dynamic_sampling_from_step else "off"
    what = {
        objectives.RPT: f"reward {config.reward}, {config.answer} answers; dynamic sampling {dynamic}",
        objectives.NTP: "objective ntp (continued next-token training)",
        objectives.COLDSTART: f"objective coldstart (supervised examples in the boxed format, answers: "
        f"{config.coldstart_answer})",
        objectives.RLP: f"objective rlp (information gain, EMA decay {config.ema_decay:g}); dynamic sampling {dynamic}",
    }[config.objective]
    console.print(
        f"train: {len(samples):,} samples; {plan.describe()}; {config.max_steps} steps; "
        f"{trainer.rpt_parameters / 1e6:,.1f}M parameters; {what}; {where}; ready in {seconds:.0f} s",
        markup=False,
    )
    shared_off = getattr(trainer, "rpt_shared_off", None)
    if config.shared_prompt and shared_off is not None:
        console.print(
            f"train: note: shared prompts off for this model ({shared_off}): every completion runs its prompt",
            markup=False,
        )
    positions = getattr(trainer.model.config, "max_position_embeddings", None)
    if (
        positions
        and config.objective not in objectives.SUPERVISED
        and config.max_prompt_tokens + config.max_new_tokens > positions
    ):
        console.print(
            f"train: note: --max-prompt-tokens {config.max_prompt_tokens} + --max-new-tokens "
            f"{config.max_new_tokens} exceed the model's {positions} positions: long prompts and "
            "completions may degrade",
            markup=False,
        )
    if len(samples) < config.contexts_per_step:
        console.print(
            f"train: note: {len(samples)} samples are fewer than --contexts-per-step "
            f"{config.contexts_per_step}: contexts repeat within a step",
            markup=False,
        )


def save_final(trainer, folder: Path) -> Path:
    """The final model, written beside its place and moved in whole (with its marker)."""
    target = folder / FINAL
    tmp = folder / f".{FINAL}.tmp"
    trainer.save_model(str(tmp))  # every process takes part (ZeRO-3 gathers the weights)
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        mark_complete(tmp, trainer.state.global_step)
        replace_folder(tmp, target)
    trainer.accelerator.wait_for_everyone()
    return target


def end_processes() -> None:
    """Close the process group of a multi-process run (`accelerate launch`, `torchrun`) once every
    process is done. Left to interpreter exit, its teardown may abort a process (SIGABRT, seen
    once with gloo) after a run that succeeded, and the launcher then reports the run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        PartialState().destroy_process_group()


__all__ = [
    "CONFIG_FILE",
    "Job",
    "build",
    "check_new_tokens",
    "check_server_mode",
    "end_processes",
    "flops_at",
    "generation_stops",
    "grpo_args",
    "plan_output",
    "prepare",
    "train",
]
