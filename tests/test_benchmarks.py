"""benchmarks/gpu.sh runs end to end (at the `smoke` size, on the CPU) and writes the JSON that
docs/benchmarks.md describes: a script meant for GPU machines that are lent now and then must not
rot in between. The figures of a run this small mean nothing; their presence and shape do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def run(*args: str, env: dict | None = None, timeout: int = 900):
    return subprocess.run(
        [str(SCRIPT), *args],
        env={
            **os.environ,
            "PYTHON": sys.executable,
            "DEVICE": "cpu",
            "SIZE": "smoke",
            "HF_HUB_OFFLINE": "1",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # two trainers and a few models on 2 cores: a minute or two
def test_every_part_runs_and_writes_one_json_of_ratios(tmp_path):
    out = tmp_path / "bench.json"
    done = run("-o", str(out), "--parts", "entropy,rollout,train,eval", "--threads", "1")
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["size"] == "smoke" and report["device"].startswith("cpu")
    shape = report["shape"]
    assert report["parameters"] > shape["vocab_size"] * shape["hidden_size"]  # embedding and layers
    for part in ("entropy", "rollout", "train", "eval"):
        assert report[part]["ratio"] > 0 and report[part]["seconds"] > 0, report[part]
    assert report["entropy"]["uses_head_path"] and report["entropy"]["ratio_with_torch_topk"] > 0
    assert report["entropy"]["met"] in (True, False) and report["entropy"]["target"] == ">= 0.9"
    assert report["train"]["target"] == "<= 1.05" and report["train"]["steps_measured_per_side"] == 1
    assert report["eval"]["same_predictions"] == report["eval"]["samples"] == 16
    assert report["rollout"]["tokens_per_run"] == 2 * 2 * 4
    # the last line of standard output: the ratios, one per part
    assert json.loads(done.stdout.strip().splitlines()[-1]) == report["ratios"]
    assert set(report["ratios"]) == {"entropy", "rollout", "train", "eval"}


def test_unknown_part_and_missing_gpu_are_refused(tmp_path):
    bad = run("-o", str(tmp_path / "x.json"), "--parts", "entropy,speed", timeout=120)
    assert bad.returncode == 2 and "--parts: unknown speed" in bad.stderr
    assert not (tmp_path / "x.json").exists()
    import torch

    if not torch.cuda.is_available():
        gpu = run("-o", str(tmp_path / "y.json"), env={"DEVICE": "cuda"}, timeout=120)
        assert gpu.returncode == 2 and "no CUDA device here" in gpu.stderr
