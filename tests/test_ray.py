"""The data stages on a real local Ray cluster (2 workers, CPU): `--ray local` writes what one
process writes, record for record; bad input is the same one-line error; a worker killed in the
middle of a unit has that unit run again, and its records come out once."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from tests.conftest import EXAMPLES

pytest.importorskip("ray.data")

pytestmark = pytest.mark.ray

runner = CliRunner()
RAY = ["--ray", "local", "--ray-workers", "2"]
# small windows and batches, so the 64 example documents make several chunks (units of work)
ENTROPY_ARGS = ["--window", "128", "--batch-tokens", "256"]


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # a Ray worker with one CPU runs torch on one thread: the single-process run does too, so both
    # reduce in the same order and the comparison can be exact
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scored_here(tiny_model_dir, tmp_path_factory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("here") / "scored.jsonl"
    try:
        result = runner.invoke(
            app, ["entropy", str(EXAMPLES / "corpus.jsonl"), "-m", str(tiny_model_dir), *ENTROPY_ARGS, "-o", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow  # starts a Ray cluster and its workers: tens of seconds on 2 cores
def test_entropy_on_ray_equals_one_process(tiny_model_dir, tmp_path, scored_here):
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(
        app,
        ["entropy", str(EXAMPLES / "corpus.jsonl"), "-m", str(tiny_model_dir), *ENTROPY_ARGS, *RAY, "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "ray, 2 workers" in result.output
    here, there = read_jsonl(scored_here), read_jsonl(out)
    assert len(here) == 64
    assert [d["id"] for d in there] == [d["id"] for d in here]
    assert there == here


@pytest.mark.slow  # starts a Ray cluster and its workers: tens of seconds on 2 cores
def test_rollout_on_ray_equals_one_process(tiny_model_dir, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(
        b"".join(
            orjson.dumps({"id": f"doc@{k}", "context": f"Let $x$ be {k} such that", "target": " 3", "boundaries": [2]})
            + b"\n"
            for k in range(7)
        )
    )
    # 7 contexts in chunks of 3: three units, the last one short; each chunk has its own seed
    args = ["rollout", str(samples), "-m", str(tiny_model_dir), "-G", "2", "--max-new-tokens", "6"]
    args += ["--contexts-per-call", "3", "--no-chat", "--seed", "5"]
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    result = runner.invoke(app, [*args, "-o", str(here)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, *RAY, "-o", str(there)])
    assert result.exit_code == 0, result.output
    assert "ray, 2 workers" in result.output
    records = read_jsonl(there)
    assert [r["id"] for r in records] == [f"doc@{k}" for k in range(7)]
    assert all(len(r["completions"]) == 2 for r in records)
    assert records == read_jsonl(here)
    # a run cut off inside the second chunk (4 records and half a line), resumed in one process and
    # on Ray: the same records (each chunk keeps its number, so its seed), each id once
    lines = here.read_bytes().splitlines(keepends=True)
    for path, extra in ((here, []), (there, RAY)):
        path.write_bytes(b"".join(lines[:4]) + lines[4][:20])
        result = runner.invoke(app, [*args, *extra, "--resume", "-o", str(path)])
        assert result.exit_code == 0, result.output
        assert "resuming: 4 samples already in" in result.output
    assert [r["id"] for r in read_jsonl(there)] == [f"doc@{k}" for k in range(7)]
    assert read_jsonl(there) == read_jsonl(here)


@pytest.mark.slow  # starts a Ray cluster and its workers: tens of seconds on 2 cores
def test_eval_on_ray_equals_one_process(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rpt_cli.evaluate.on_ray import BATCHES_PER_UNIT
    from tests.test_eval import corpus_samples

    samples = tmp_path / "samples.jsonl"
    records = corpus_samples(AutoTokenizer.from_pretrained(tiny_model_dir))
    samples.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    # both modes in one run: ntp in batches of 64 padded tokens (a row or two: several units of 4
    # batches), reasoning in chunks of 8 contexts (3 units), each chunk with its own seed
    args = ["eval", str(samples), "-m", str(tiny_model_dir), "--mode", "ntp", "--mode", "reasoning", "--limit", "24"]
    args += ["-G", "2", "--max-new-tokens", "4", "--contexts-per-call", "8", "--backend", "hf", "--no-think"]
    args += ["--batch-tokens", "64", "--temperature", "1.5"]
    runs = {}
    for name, extra in (("here", []), ("there", RAY)):
        details = tmp_path / f"{name}.details.jsonl"
        result = runner.invoke(app, [*args, *extra, "--details", str(details), "-o", str(tmp_path / f"{name}.json")])
        assert result.exit_code == 0, result.output
        reports = read_jsonl(tmp_path / f"{name}.json")
        for report in reports:  # what only the clock decides
            report.pop("seconds")
            report["settings"].pop("positions_per_second", None)
        runs[name] = reports, read_jsonl(details)
    (here, here_details), (there, there_details) = runs["here"], runs["there"]
    assert [r["mode"] for r in there] == ["ntp", "reasoning"]
    assert there[0]["settings"]["forward_rows"] > BATCHES_PER_UNIT  # 64 tokens: a batch a row, so 2 units
    assert there == here
    assert len(there_details) == 48 and there_details == here_details


@pytest.mark.parametrize("command", ["entropy", "rollout", "eval"])
def test_bad_record_is_the_same_one_line_error_on_ray(tiny_model_dir, tmp_path, command):
    bad = tmp_path / "bad.jsonl"
    good = {"id": 1, "text": "fine"} if command == "entropy" else {"id": 1, "context": "a", "target": "b"}
    if command == "eval":
        good.update(boundaries=[1], entropy=1.2)
    bad.write_bytes(orjson.dumps(good) + b"\n" + b'{"id": 2, "text": \n')
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, [command, str(bad), "-m", str(tiny_model_dir), *RAY, "-o", str(out)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:2:"), result.output
    assert not out.exists()


def test_ray_options_need_ray(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["entropy", str(EXAMPLES / "val.jsonl"), "--ray-workers", "3"])
    assert result.exit_code == 2
    assert "--ray-workers and --ray-gpus-per-worker apply with --ray only" in result.output


@dataclass(frozen=True)
class DieOnce:
    """A unit processor factory whose worker process kills itself (no exception, no clean-up:
    `os._exit`) at its first unit while `marker` does not exist, after creating it: the first
    attempt at one unit dies with its worker, every later one goes through."""

    inner: object
    marker: str

    def __call__(self):
        process = self.inner()

        def maybe_die(unit):
            if not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os._exit(1)
            return process(unit)

        return maybe_die


@pytest.mark.slow  # starts a Ray cluster and its workers: tens of seconds on 2 cores
def test_a_killed_worker_is_replaced_and_its_unit_run_once_more(tiny_model_dir, tmp_path, scored_here):
    import ray.cloudpickle

    from rpt_cli.cluster import RayCluster, RaySettings
    from rpt_cli.entropy import EntropyChunkWorker, EntropyEngine, document_chunks
    from rpt_cli.models import display_name

    # the workers cannot import this test module: send DieOnce by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    engine = EntropyEngine(str(tiny_model_dir), window=128, batch_tokens=256)
    docs = read_jsonl(EXAMPLES / "corpus.jsonl")
    chunks = list(document_chunks(docs, "text", engine.chunk_tokens()))
    assert len(chunks) >= 3
    marker = tmp_path / "died"
    worker = EntropyChunkWorker(engine, "text", display_name(str(tiny_model_dir)))
    with RayCluster(RaySettings("local", workers=2)) as cluster:
        results = list(cluster.results(chunks, DieOnce(worker, str(marker))))
    assert marker.exists()  # a worker did die
    assert int(marker.read_text()) != os.getpid()  # in a worker process, not here
    scored = [doc for documents, _, _ in results for doc in documents]
    assert [d["id"] for d in scored] == [d["id"] for d in docs]  # every document once, in order
    assert orjson.loads(orjson.dumps(scored)) == read_jsonl(scored_here)


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_entropy_on_ray_matches_the_hf_path(tiny_model_dir, tmp_path):
    """`--backend vllm` under `--ray`: one worker (one vLLM engine at a time on a small machine),
    the same offsets as the hf path in one process, entropies within test_entropy_vllm's tolerance."""
    from rpt_cli.generation.vllm_backend import vllm_installed

    if not vllm_installed():
        pytest.skip("vLLM is not installed")
    from tests.test_entropy_vllm import TOLERANCE
    from tests.test_generation_vllm import build_vllm_ready_model

    model = build_vllm_ready_model(tmp_path / "model", tiny_model_dir)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in read_jsonl(EXAMPLES / "corpus.jsonl")[:6]))
    args = ["entropy", str(corpus), "-m", str(model), "--window", "128", "--dtype", "float32", "--device", "cpu"]
    here, there = tmp_path / "hf.jsonl", tmp_path / "vllm.jsonl"
    result = runner.invoke(app, [*args, "-o", str(here)])
    assert result.exit_code == 0, result.output
    vllm_args = ["--backend", "vllm", "--enforce-eager", "--ray", "local", "--ray-workers", "1"]
    result = runner.invoke(app, [*args, *vllm_args, "-o", str(there)])
    assert result.exit_code == 0, result.output
    assert "ray, 1 worker, vllm" in result.output
    a, b = read_jsonl(here), read_jsonl(there)
    assert [d["offsets"] for d in b] == [d["offsets"] for d in a]
    pairs = [(x, y) for u, v in zip(a, b) for x, y in zip(u["entropy"], v["entropy"]) if x is not None]
    assert len(pairs) > 500
    assert max(abs(x - y) for x, y in pairs) <= TOLERANCE


@dataclass(frozen=True)
class AlwaysDie:
    """A unit processor whose worker dies at every unit, counting its attempts in `folder`."""

    folder: str

    def __call__(self):
        def die(unit):
            Path(self.folder, f"{os.getpid()}-{len(os.listdir(self.folder))}").touch()
            os._exit(1)

        return die


@pytest.mark.slow  # starts a Ray cluster and restarts a worker several times
def test_a_unit_that_kills_every_worker_ends_the_run(tmp_path):
    import ray.cloudpickle

    from rpt_cli.cluster import MAX_RESTARTS, RayCluster, RaySettings
    from rpt_cli.errors import RuntimeFailure

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayCluster(RaySettings("local", workers=1)) as cluster:
        with pytest.raises(RuntimeFailure, match="^ray: "):
            list(cluster.results(["only"], AlwaysDie(str(tmp_path))))
    # the first attempt and its retries, then no more
    assert 2 <= len(os.listdir(tmp_path)) <= MAX_RESTARTS + 1
