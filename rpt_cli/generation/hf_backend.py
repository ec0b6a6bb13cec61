"""The transformers backend: `model.generate` over large left-padded batches with the KV cache.

All per-token work happens inside `generate`; this module only prepares one padded batch per
call and reads the results afterwards, so it runs as fast as a bare `generate` on the same batch
(benchmarks/bench_rollout.py measures it). Rows are sorted by prompt length so a batch wastes
little on padding, and as many rows (prompts × n) go into one call as the memory budget allows.
"""

from __future__ import annotations

import os

from rpt_cli.generation.base import FINISH_LENGTH, FINISH_STOP, Completion, SamplingConfig, stop_token_ids
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

    def __init__(self, model, tokenizer, *, model_name: str | None = None,
                 max_batch_sequences: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = model.device
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        if not self.stop_ids:
            raise ValueError("the tokenizer has no end-of-sequence token, so completions could never stop")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.max_batch_sequences = max_batch_sequences
        self._oom_cap: int | None = None

    @classmethod
    def from_spec(cls, spec: str, *, device: str = "auto", dtype: str = "auto",
                  trust_remote_code: bool = False, max_batch_sequences: int | None = None) -> HFBackend:
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
        kwargs = dict(max_new_tokens=params.max_new_tokens, eos_token_id=self.stop_ids,
                      pad_token_id=self.pad_id, repetition_penalty=1.0)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_new_tokens
        return kwargs

    def generate(self, prompts: list[str], n: int, params: SamplingConfig) -> list[list[Completion]]:
        import torch

        params.check()
        if n < 1:
            raise ValueError("n must be at least 1")
        encoded = [encode_prompt(self.tokenizer, prompt) for prompt in prompts]
        # one row per completion; sorting by length (stable, so a prompt's rows stay together)
        # keeps padding low, and each prompt's completions keep their order j = 0..n-1
        rows = sorted((len(encoded[i]), i) for i in range(len(prompts)) for _ in range(n))
        results: list[list[Completion]] = [[] for _ in prompts]
        forked = [self.device] if self.device.type == "cuda" else []
        # fork_rng: a seeded call leaves the caller's random state (a training loop's) untouched
        with torch.random.fork_rng(devices=forked), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            start = 0
            while start < len(rows):
                limit = self.rows_per_call(rows[-1][0] + params.max_new_tokens)
                group = rows[start:start + limit]
                try:
                    completions = self._generate_rows([encoded[i] for _, i in group], params)
                except torch.OutOfMemoryError:
                    if len(group) == 1:
                        raise
                    self._oom_cap = max(1, len(group) // 2)
                    torch.cuda.empty_cache()
                    continue
                for (_, i), completion in zip(group, completions):
                    results[i].append(completion)
                start += len(group)
        return results

    def _generate_rows(self, rows: list[list[int]], params: SamplingConfig) -> list[Completion]:
        import torch

        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):  # left padding: every row's last prompt token is aligned
            if ids:
                input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[r, width - len(ids):] = 1
        output = self.model.generate(input_ids=input_ids.to(self.device),
                                     attention_mask=attention_mask.to(self.device),
                                     **self.generation_kwargs(params))
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
                completions.append((FINISH_STOP, ids[:end + 1]))
        texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return [Completion(text, reason, len(ids), tuple(ids)) for text, (reason, ids) in zip(texts, completions)]
