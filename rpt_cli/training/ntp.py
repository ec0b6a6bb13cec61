"""`rpt train --objective ntp`: continual next-token training on the documents RPT's samples come
from, the paper's baseline ("continual NTP training on the same corpus", Table 2), on TRL's
SFTTrainer.

The samples carry the documents' text: a sample's context is the document before its position
(whole, unless `rpt filter --max-context-tokens` cut it), and its target continues it. So each
document is rebuilt as the longest text its samples give, `context + target` up to the target's
last token boundary: the text of every sample that is a prefix of another's is covered by it and
dropped. What is trained is each such text once per pass: its tokens (the tokenizer's special
prefix, e.g. BOS, then the text tokenized as a whole) in consecutive sequences of at most
`--max-prompt-tokens` tokens, the loss the mean next-token loss over every token. A document's
opening is trained once per pass, however many samples were drawn from the document.

What this does not see: the document after its last sampled position's target (`rpt filter
--min-context-tokens 1` without `--min` samples every position, so nearly all of it), and, where
contexts were cut from the left, the overlap of two samples' texts, which then trains once per
sample. Steps draw sequences in `DataOrder`'s order (a seeded permutation per pass), the run
folder, checkpoints and resume are those of the other objectives, and metrics.jsonl gets one line
per step with the loss in place of the reward and the tokens trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import SFTTrainer

from rpt_cli.models import checkpointing_argument
from rpt_cli.training.data import DataOrder, Samples, StepSampler
from rpt_cli.training.trainer import RunCheckpoints


def sample_text(row: dict) -> str:
    """A sample's context and its target up to the target's last token boundary."""
    boundaries = row["boundaries"]
    target = row["target"]
    piece = target.encode("utf-8")[: boundaries[-1]].decode("utf-8", "ignore") if boundaries else target
    return row["context"] + piece


def document_texts(samples: Samples) -> list[tuple[str, str]]:
    """(id of the sample that gives it, text) of each document, in the order of the samples file:
    the texts of the samples that no other sample's text extends."""
    first: dict[str, str] = {}
    for row in samples.rows:
        first.setdefault(sample_text(row), row["id"])
    # in sorted order, every text that extends `t` follows `t` directly (they share its prefix)
    ordered = sorted(first)
    extended = {t for t, after in zip(ordered, ordered[1:]) if after.startswith(t)}
    return [(sample_id, text) for text, sample_id in first.items() if text not in extended]


@dataclass(frozen=True)
class DocumentSequences:
    rows: list[dict]  # {"input_ids": [...]} per sequence
    ids: list[str]  # per sequence: the id of the sample giving its document, `#k` for its k-th part
    documents: int
    tokens: int  # tokens trained per pass, special prefixes included

    def describe(self) -> str:
        return (
            f"{self.documents:,} documents rebuilt from the samples (the longest context + target of each), "
            f"{len(self.rows):,} sequences, {self.tokens:,} tokens a pass"
        )


def document_sequences(samples: Samples, tokenizer, max_tokens: int) -> DocumentSequences:
    """The training sequences of the samples' documents (see the module's docstring)."""
    from rpt_cli.tokens import DocTokenizer

    doc_tokenizer = DocTokenizer(tokenizer)
    prefix = list(doc_tokenizer.prefix)
    width = max(max_tokens - len(prefix), 1)
    rows, ids, tokens = [], [], 0
    texts = document_texts(samples)
    for (sample_id, _), doc in zip(texts, doc_tokenizer([text for _, text in texts])):
        ids_of_doc = list(doc.lead) + doc.ids
        parts = [ids_of_doc[start : start + width] for start in range(0, len(ids_of_doc), width)]
        for k, part in enumerate(parts):
            rows.append({"input_ids": prefix + part})
            ids.append(sample_id if len(parts) == 1 else f"{sample_id}#{k}")
            tokens += len(prefix) + len(part)
    return DocumentSequences(rows, ids, len(texts), tokens)


def sft_args(config, plan, folder: Path, *, completion_only: bool = False):
    """TRL's SFTConfig with the settings `rpt train` shares with GRPO (docs/train.md).
    `completion_only`: the loss reaches the completion of prompt/completion rows only (coldstart,
    whose trainer is handed the model it already loaded to make its examples)."""
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
        max_length=None,  # the sequences are cut already (`document_sequences`)
        packing=False,
        completion_only_loss=completion_only,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=None,  # rotation is ours
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        model_init_kwargs=None if completion_only else {"dtype": dtype},
        **checkpointing_argument(config.gradient_checkpointing),
        trust_remote_code=config.trust_remote_code,
        report_to="none" if config.report_to == "none" else [config.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


class NTPTrainer(RunCheckpoints, SFTTrainer):
    """SFTTrainer drawing `DataOrder`'s sequences, logging one metrics line per step."""

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


__all__ = ["DocumentSequences", "NTPTrainer", "document_sequences", "document_texts", "sample_text", "sft_args"]
