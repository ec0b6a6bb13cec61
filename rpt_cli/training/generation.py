"""Training generation with each context's prompt prefilled once.

TRL's transformers path (`GRPOTrainer._generate_single_turn`) generates from G copies of every
prompt and so prefills each prompt G times. Here the distinct prompts, but their last token, are
prefilled once (`hf_backend.prefill_cache`, the path of `rpt rollout --backend hf`), the cache is
copied to the G rows, and TRL's own `generate` call continues from it with TRL's generation
config: the same sampling settings, stops and row order as TRL's.
"""

from __future__ import annotations

import inspect

import torch


def generate_with_shared_prefill(trainer, prompt_ids: list[list[int]]) -> list[list[int]]:
    """Completion token ids, one list per row of `prompt_ids`, cut after the first stop token as
    TRL cuts them."""
    from trl.models import unwrap_model_for_generation
    from trl.trainer.utils import pad

    from rpt_cli.generation.hf_backend import prefill_cache
    from rpt_cli.models import cache_argument

    device = trainer.accelerator.device
    unique = list(dict.fromkeys(tuple(ids) for ids in prompt_ids))
    where = {ids: k for k, ids in enumerate(unique)}
    expand = torch.tensor([where[tuple(ids)] for ids in prompt_ids], device=device)
    tensors = [torch.tensor(ids) for ids in unique]
    padding = dict(padding_side="left", pad_to_multiple_of=trainer.pad_to_multiple_of)
    input_ids = pad(tensors, padding_value=trainer._tokenizer.pad_token_id, **padding).to(device)
    attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, **padding).to(device)
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            generation_kwargs=trainer.generation_kwargs,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model,
        torch.no_grad(),
        trainer._dist.summon_full_params(trainer.model_wrapped, recurse=False),
    ):
        kwargs = {}
        if input_ids.size(1) > 1 and len(unique) < len(prompt_ids):
            last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
            cache = prefill_cache(model, input_ids[:, :-1], attention_mask[:, :-1], **last_only)
            if cache is not None:
                cache.reorder_cache(expand)
                kwargs[cache_argument(model)] = cache
        output = model.generate(
            input_ids=input_ids[expand],
            attention_mask=attention_mask[expand],
            generation_config=trainer.generation_config,
            **kwargs,
        )
    completion_ids = output[:, input_ids.size(1) :]
    # as TRL: keep each row up to and including its first stop token
    is_eos = torch.isin(completion_ids, torch.tensor(trainer.eos_token_ids, device=completion_ids.device))
    any_eos = is_eos.any(dim=1)
    ends = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long, device=completion_ids.device)
    ends[any_eos] = is_eos.int().argmax(dim=1)[any_eos]
    return [row[: int(end) + 1].tolist() for row, end in zip(completion_ids.cpu(), ends.cpu())]


__all__ = ["generate_with_shared_prefill"]
