"""`rpt train --objective ntp`: continued next-token training on the samples, the paper's
baseline (Table 2), on TRL's SFTTrainer.

Each sample becomes one sequence: the tokenizer's special prefix (e.g. BOS), the last
`--max-prompt-tokens` tokens of its context, then its target up to the target's last token
boundary, tokenized together as in the document; the loss is the mean next-token loss over every
token. Steps draw contexts in `DataOrder`'s order, as `rpt` and `rlp` runs do, so the three
objectives see the same samples in the same steps; the run folder, checkpoints and resume are
the same, and metrics.jsonl gets one line per step with the loss in place of the reward.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from trl import SFTTrainer

from rpt_cli.models import checkpointing_argument
from rpt_cli.training.data import DataOrder, Samples, StepSampler
from rpt_cli.training.trainer import RunCheckpoints


def sequence_ids(doc_tokenizer, context: str, target: str, boundaries: list[int], max_context_tokens: int) -> list[int]:
    """The training sequence of one sample (see the module's docstring)."""
    data = target.encode("utf-8")
    piece = data[: boundaries[-1]].decode("utf-8", "ignore") if boundaries else target
    (doc,) = doc_tokenizer([context + piece])
    start = len(context.encode("utf-8"))
    split = next((k for k, offset in enumerate(doc.offsets[:-1]) if offset >= start), len(doc.ids))
    context_ids = list(doc.lead) + doc.ids[:split]
    keep = max(max_context_tokens, 0)
    return list(doc_tokenizer.prefix) + context_ids[len(context_ids) - keep :] + doc.ids[split:]


def ntp_rows(samples: Samples, tokenizer, max_context_tokens: int) -> list[dict]:
    from rpt_cli.tokens import DocTokenizer

    doc_tokenizer = DocTokenizer(tokenizer)
    return [
        {"input_ids": sequence_ids(doc_tokenizer, row["context"], row["target"], row["boundaries"], max_context_tokens)}
        for row in samples.rows
    ]


def sft_args(config, plan, folder: Path):
    """TRL's SFTConfig with the settings `rpt train` shares with GRPO (docs/train.md)."""
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    dtype = "float32" if config.dtype == "auto" else config.dtype
    return SFTConfig(
        output_dir=str(folder),
        per_device_train_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        max_grad_norm=config.max_grad_norm,
        max_steps=config.max_steps,
        max_length=None,  # the sequences are cut already (`sequence_ids`)
        packing=False,
        completion_only_loss=False,
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
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


class NTPTrainer(RunCheckpoints, SFTTrainer):
    """SFTTrainer drawing `DataOrder`'s contexts, logging one metrics line per step."""

    def __init__(
        self,
        *args,
        data_order: DataOrder,
        sample_ids: list[str],
        run_log=None,
        flops_start=0.0,
        save_total_limit=None,
        **kwargs,
    ):
        self.rpt_order = data_order
        self.rpt_ids = sample_ids
        self.rpt_log = run_log
        self.rpt_flops = flops_start
        self.rpt_save_total_limit = save_total_limit
        self._rpt_started: float | None = None
        self._rpt_tokens = 0
        super().__init__(*args, **kwargs)
        from transformers.trainer_pt_utils import get_model_param_count

        self.rpt_parameters = get_model_param_count(self.model, trainable_only=False)

    def _get_train_sampler(self, dataset=None):
        return StepSampler(self.rpt_order, 1, repeat_count=1, steps=self.args.max_steps)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._rpt_started is None:
            self._rpt_started = time.perf_counter()
        self._rpt_tokens += (
            int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
        )
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" not in logs or not self.model.training or self._rpt_started is None:
            return super().log(logs, start_time)
        step = self.state.global_step
        tokens = int(self.accelerator.gather(torch.tensor([self._rpt_tokens], device=self.accelerator.device)).sum())
        step_time = time.perf_counter() - self._rpt_started
        self._rpt_started, self._rpt_tokens = None, 0
        self.rpt_flops += 6.0 * self.rpt_parameters * tokens
        metrics = {
            "step": step,
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "trained_tokens": tokens,
            "step_time_s": step_time,
            "tokens_per_s": tokens / step_time if step_time > 0 else 0.0,
            "flops": self.rpt_flops,
            "epoch": self.rpt_order.epochs(step),
        }
        logs.update({f"rpt/{key}": metrics[key] for key in ("trained_tokens", "step_time_s", "flops")})
        super().log(logs, start_time)
        if self.rpt_log is not None and self.accelerator.is_main_process:
            drawn = [self.rpt_ids[i] for i in self.rpt_order.step_indices(step - 1)]
            self.rpt_log.write_step(metrics, {"step": step, "drawn": drawn, "refilled": [], "dropped": []})


__all__ = ["NTPTrainer", "ntp_rows", "sequence_ids", "sft_args"]
