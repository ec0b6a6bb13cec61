"""The transformers backend: `model.generate` over large left-padded batches with the KV cache.

All per-token work happens inside `generate`; this module only prepares one padded batch per
call and reads the results afterwards, so it runs at least as fast as a bare `generate` on the
same batch (benchmarks/bench_rollout.py measures it). Rows (prompts × n) are sorted by prompt
length so a batch wastes little on padding, as many go into one call as the memory budget allows,
and each distinct prompt is run through the model once for its n rows, not n times.
"""

from __future__ import annotations

import inspect
import os

from rpt_cli.generation.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    CompletionDecoder,
    SamplingConfig,
    stop_token_ids,
)
from rpt_cli.models import cache_argument
from rpt_cli.prompts import encode_prompt

# Share of the machine's memory the KV cache of one `generate` call may fill. Total (not free)
# memory on purpose: the batch shape must not depend on what else runs, or the same seed would
# give different samples from one run to the next.
CPU_MEMORY_SHARE = 0.25
GPU_MEMORY_SHARE = 0.45


def _total_cpu_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class HFBackend:
    """Generation with a loaded transformers model. Training can hand in the model it trains."""

    name = "hf"

    def __init__(self, model, tokenizer, *, model_name: str | None = None, max_batch_sequences: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = model.device
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        if not self.stop_ids:
            raise ValueError("the tokenizer has no end-of-sequence token, so completions could never stop")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.decode = CompletionDecoder(tokenizer)
        self.max_batch_sequences = max_batch_sequences
        self._oom_cap: int | None = None
        # prefill each distinct prompt once for its n rows (see `_prefill`); models whose cache is
        # not a plain dynamic one (static, sliding-window hybrids set in the generation config)
        # prefill inside `generate` as usual
        self.share_prefill = getattr(getattr(model, "generation_config", None), "cache_implementation", None) is None
        accepts = inspect.signature(model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        self._cache_name = cache_argument(model)

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_batch_sequences: int | None = None,
    ) -> HFBackend:
        """Load any `--model` value (built-in name, folder, .gguf, hub id) and wrap it."""
        from rpt_cli.models import display_name, load_model

        model, tokenizer, _ = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, model_name=display_name(spec), max_batch_sequences=max_batch_sequences)

    def close(self) -> None:
        self.model = None

    # -- batch sizing ----------------------------------------------------------------------------
    def kv_bytes_per_token(self) -> int:
        config = self.model.config.get_text_config()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        element = next(self.model.parameters()).element_size()
        return 2 * config.num_hidden_layers * kv_heads * head_dim * element

    def rows_per_call(self, sequence_tokens: int) -> int:
        """How many sequences of `sequence_tokens` (prompt + new tokens) one call may hold."""
        if self.max_batch_sequences is not None:
            return max(1, self.max_batch_sequences)
        import torch

        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
            budget = max(total * GPU_MEMORY_SHARE - weights, total * 0.05)
        else:
            budget = _total_cpu_memory() * CPU_MEMORY_SHARE
        rows = int(budget // (self.kv_bytes_per_token() * max(1, sequence_tokens)))
        if self._oom_cap is not None:
            rows = min(rows, self._oom_cap)
        return max(1, rows)

    # -- generation ------------------------------------------------------------------------------
    def generation_kwargs(self, params: SamplingConfig) -> dict:
        """The arguments of `model.generate` for these settings (the benchmark's bare baseline
        passes the same ones). Sampling settings are given explicitly so the model's own
        generation defaults (a top-k of 50, a repetition penalty) do not creep in."""
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            repetition_penalty=1.0,
        )
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_new_tokens
        return kwargs

    def generate(self, prompts: list[str] | list[list[int]], n: int, params: SamplingConfig) -> list[list[Completion]]:
        import torch

        params.check()
        if n < 1:
            raise ValueError("n must be at least 1")
        encoded = [
            list(prompt) if isinstance(prompt, list) else encode_prompt(self.tokenizer, prompt) for prompt in prompts
        ]
        # one row per completion; sorting by length (stable, so a prompt's rows stay together)
        # keeps padding low, and each prompt's completions keep their order j = 0..n-1
        rows = sorted((len(encoded[i]), i) for i in range(len(prompts)) for _ in range(n))
        results: list[list[Completion]] = [[] for _ in prompts]
        forked = [self.device] if self.device.type == "cuda" else []
        # a training loop hands in its policy in train mode: sample without dropout, then restore
        was_training = self.model.training
        self.model.eval()
        try:
            # fork_rng: a seeded call leaves the caller's random state (a training loop's) untouched
            with torch.random.fork_rng(devices=forked), torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                start = 0
                while start < len(rows):
                    limit = self.rows_per_call(rows[-1][0] + params.max_new_tokens)
                    group = [i for _, i in rows[start : start + limit]]
                    try:
                        completions = self._generate_rows(group, encoded, params)
                    except torch.OutOfMemoryError:
                        if len(group) == 1:
                            raise
                        self._oom_cap = max(1, len(group) // 2)
                        torch.cuda.empty_cache()
                        continue
                    for i, completion in zip(group, completions):
                        results[i].append(completion)
                    start += len(group)
        finally:
            self.model.train(was_training)
        return results

    def _generate_rows(self, group: list[int], encoded: list[list[int]], params: SamplingConfig) -> list[Completion]:
        """One `generate` call for the rows `group` (prompt indices, a prompt's rows adjacent)."""
        import torch

        unique = list(dict.fromkeys(group))
        width = max(len(encoded[i]) for i in unique)
        input_ids = torch.full((len(unique), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(unique), width), dtype=torch.long)
        for r, i in enumerate(unique):  # left padding: every row's last prompt token is aligned
            ids = encoded[i]
            if ids:
                input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[r, width - len(ids) :] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        # row k of the call samples prompt unique[expand[k]]
        expand = torch.tensor([unique.index(i) for i in group], device=self.device)
        kwargs = self.generation_kwargs(params)
        if self.share_prefill and len(group) > len(unique) and width > 1:
            cache = self._prefill(input_ids[:, :-1], attention_mask[:, :-1])
            if cache is not None:
                cache.reorder_cache(expand)
                kwargs[self._cache_name] = cache
        output = self.model.generate(input_ids=input_ids[expand], attention_mask=attention_mask[expand], **kwargs)
        new_tokens = output[:, width:].tolist()
        stops = set(self.stop_ids)
        kept: list[list[int]] = []
        completions = []
        for ids in new_tokens:
            end = next((k for k, token in enumerate(ids) if token in stops), None)
            if end is None or params.ignore_eos:
                kept.append(ids)
                completions.append((FINISH_LENGTH, ids))
            else:
                kept.append(ids[:end])
                completions.append((FINISH_STOP, ids[: end + 1]))
        return [
            Completion(text, reason, len(ids), tuple(ids), data)
            for (text, data), (reason, ids) in zip(self.decode(kept), completions)
        ]

    def _prefill(self, input_ids, attention_mask):
        """`prefill_cache` for this backend's model; None (and sharing off from then on) for a
        model it does not work with: such a model prefills the usual way."""
        cache = prefill_cache(self.model, input_ids, attention_mask, **self._last_logits_only)
        if cache is None:
            self.share_prefill = False
        return cache


def prefill_cache(model, input_ids, attention_mask, **forward_kwargs):
    """The KV cache of each distinct prompt but its last token, computed once: `generate` on n
    copies of a prompt would compute the same prompt n times. `generate` then continues from this
    cache (copied to the n rows, `reorder_cache`) and runs only the last prompt token itself.
    `rpt train` generates through it too (training/generation.py). None for a model this does not
    work with."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
        # the positions `generate` gives left-padded rows, so the continuation lines up
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache_argument(model): cache},
            **forward_kwargs,
        )
        return cache
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return None
