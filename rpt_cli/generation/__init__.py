"""One generation layer for rollout, evaluation and training.

    from rpt_cli.generation import SamplingConfig, get_backend
    backend = get_backend("auto", model="smollm2-135m")
    completions = backend.generate(prompts, n=8, params=SamplingConfig(max_new_tokens=512, seed=1))

Backends: `hf` (transformers `generate`) and `vllm` (vLLM's CUDA or CPU build). `auto` picks vLLM
when it is installed and a CUDA GPU is visible, else `hf`. Heavy libraries load only when a backend
is built.
"""

from __future__ import annotations

from rpt_cli.errors import UsageError
from rpt_cli.generation.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    GenerationBackend,
    SamplingConfig,
    derive_seed,
    stop_token_ids,
)
from rpt_cli.models import BUILTIN_NAME

BACKENDS = ("auto", "hf", "vllm")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend_name(name: str) -> str:
    """`auto` becomes `vllm` on a machine with vLLM and a CUDA GPU, otherwise `hf`: vLLM's CPU
    build is faster than `hf` on a CPU too, but takes about a minute to start, which short runs
    and tests should not pay unasked."""
    if name not in BACKENDS:
        raise UsageError(f"--backend {name}: choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    from rpt_cli.generation.vllm_backend import vllm_installed

    return "vllm" if vllm_installed() and cuda_available() else "hf"


def get_backend(
    name: str = "auto",
    model: str = BUILTIN_NAME,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    seed: int = 0,
    max_batch_sequences: int | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    enforce_eager: bool = False,
) -> GenerationBackend:
    """Build a backend for `model` (any `--model` value). `device` and `max_batch_sequences`
    apply to hf; `tensor_parallel_size`, `gpu_memory_utilization`, `max_model_len` and
    `enforce_eager` to vLLM. Call `close()` when done to free the engine."""
    name = resolve_backend_name(name)
    if name == "hf":
        from rpt_cli.generation.hf_backend import HFBackend

        return HFBackend.from_spec(
            model,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            max_batch_sequences=max_batch_sequences,
        )
    from rpt_cli.generation.vllm_backend import VLLMBackend

    return VLLMBackend(
        model,
        dtype=dtype,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        enforce_eager=enforce_eager,
        seed=seed,
        trust_remote_code=trust_remote_code,
    )


__all__ = [
    "BACKENDS",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "Completion",
    "GenerationBackend",
    "SamplingConfig",
    "derive_seed",
    "get_backend",
    "resolve_backend_name",
    "stop_token_ids",
]
