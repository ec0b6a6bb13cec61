"""`rpt train`: a short run checked end to end on a tiny model, kill and resume, dynamic sampling,
settings precedence, and the settings refused before anything loads.

Runs use the tiny random Llama of conftest.py, G=2, two contexts per step and 8-token completions,
so each step takes a fraction of a second on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import torch
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.reward import REWARD_FUNCTIONS
from rpt_cli.training.batches import concat_rows, zero_variance_groups
from rpt_cli.training.checkpoints import completed_step
from rpt_cli.training.config import DEFAULTS, TrainConfig, batch_plan, resolve_config
from rpt_cli.training.data import DataOrder, StepSampler
from tests.conftest import ROOT
from tests.train_helpers import (
    OPEN_GROUP_AT_EXIT,
    ControlledReward,
    HashReward,
    RecordingReward,
)

TEXT = (
    "Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Then $x = 2$ or $x = 3$. "
    "Hence the answer is $\\boxed{3}$. \\frac{1}{2} + \\sqrt{2} \\leq \\pi"
)
METRIC_FIELDS = {
    "step",
    "reward_mean",
    "reward_std",
    "zero_variance_share_before",
    "zero_variance_share_after",
    "no_prediction_share",
    "completion_length_mean",
    "truncated_share",
    "learning_rate",
    "step_time_s",
    *(f"{part}_s" for part in ("generation", "reward", "scoring", "train", "optimizer")),
    "tokens_per_s",
    "flops",
    "generated_tokens",
    "trained_tokens",
    "sampling_rounds",
}


def sample(i: int, prefix: str = "s") -> dict:
    cut = 12 + 5 * i
    target = TEXT[cut : cut + 6]
    return {
        "id": f"{prefix}{i}",
        "context": TEXT[:cut],
        "target": target,
        "boundaries": list(range(1, len(target.encode()) + 1)),
        "split": "hard",
    }


def write_samples(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def tiny_args(model: Path, samples: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(samples),
        "-o",
        str(out),
        "--model",
        str(model),
        "-G",
        "2",
        "--contexts-per-step",
        "2",
        "--max-new-tokens",
        "8",
        "--max-prompt-tokens",
        "256",
        "--no-gradient-checkpointing",
        "--dynamic-sampling-from-step",
        "0",
        *extra,
    ]


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def test_rewards(monkeypatch):
    for cls in (HashReward, ControlledReward, RecordingReward):
        monkeypatch.setitem(REWARD_FUNCTIONS, cls.name, cls)
    RecordingReward.calls = []
    return RecordingReward.calls


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


def test_two_steps_end_to_end(tiny_model_dir, tmp_path, test_rewards):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from rpt_cli.prompts import PromptBuilder, PromptConfig

    records = [sample(i) for i in range(6)]
    samples = write_samples(tmp_path / "samples.jsonl", records)
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        "reward: test-recording\nmax_steps: 2\nsave_steps: 1\nlearning_rate: 1e-3\ncontexts_per_step: 4\n"
    )
    out = tmp_path / "run"
    result = invoke(tiny_args(tiny_model_dir, samples, out, "--config", str(settings), "--save-steps", "2"))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out / 'final'}\n"  # data only on standard output

    # the resolved settings: CLI over YAML over defaults, and they read back
    saved = resolve_config({}, str(out / "config.yaml"))
    assert (saved.max_steps, saved.save_steps, saved.contexts_per_step, saved.learning_rate) == (2, 2, 2, 1e-3)
    assert (saved.reward, saved.temperature, saved.num_completions) == ("test-recording", DEFAULTS.temperature, 2)

    # the reward saw the samples' columns, one entry per completion, and prompts built as rollout builds them
    by_id = {r["id"]: r for r in records}
    builder = PromptBuilder(AutoTokenizer.from_pretrained(tiny_model_dir), PromptConfig(max_prompt_tokens=256))
    assert [call["step"] for call in test_rewards] == [0, 1]
    for call in test_rewards:
        assert len(call["completions"]) == len(call["target"]) == len(call["boundaries"]) == 4
        for i, sample_id in enumerate(call["id"]):
            assert call["target"][i] == by_id[sample_id]["target"]
            assert call["boundaries"][i] == by_id[sample_id]["boundaries"]
            assert call["context"][i] == by_id[sample_id]["context"]
            assert call["prompts"][i] == builder.build(by_id[sample_id]["context"])
        assert call["rewards"] == REWARD_FUNCTIONS["prefix"]()(
            call["completions"], target=call["target"], boundaries=call["boundaries"]
        )

    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    flops = 0.0
    for m, call in zip(metrics, test_rewards):
        assert METRIC_FIELDS <= set(m)
        assert m["reward_mean"] == pytest.approx(sum(call["rewards"]) / 4)
        assert m["learning_rate"] == pytest.approx(1e-3)
        assert m["generated_tokens"] == pytest.approx(m["completion_length_mean"] * 4)
        assert 1 <= m["completion_length_mean"] <= 8 and 0 <= m["truncated_share"] <= 1
        assert m["flops"] > flops and m["step_time_s"] > 0 and m["sampling_rounds"] == 1
        flops = m["flops"]
        # where the step's time went: parts that ran took time, none ran that should not, and
        # together they are within the step's time
        parts = [m[f"{part}_s"] for part in ("generation", "reward", "scoring", "train", "optimizer")]
        assert all(seconds > 0 for seconds in parts[:2] + parts[3:]) and parts[2] == 0
        assert sum(parts) <= m["step_time_s"]
        assert m["tokens_per_s"] == pytest.approx((m["prompt_tokens"] + m["generated_tokens"]) / m["step_time_s"])
    batches = read_jsonl(out / "batches.jsonl")
    assert [b["drawn"] for b in batches] == [call["id"][::2] for call in test_rewards]

    # checkpoint and final model: complete, and loadable by transformers and by rpt's model loader
    assert completed_step(out / "checkpoint-2") == 2 and completed_step(out / "final") == 2
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")
    GenerationConfig.from_pretrained(out / "final")
    assert model.config.use_cache  # the saved model generates with a KV cache
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))
    from rpt_cli.models import load_model

    loaded, tokenizer, _ = load_model(str(out / "checkpoint-2"), device="cpu")
    assert tokenizer.chat_template


# --------------------------------------------------------------------------------------------
# Dynamic sampling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta, extra", [(0.0, 0), (0.04, 1)])
def test_the_compute_estimate_matches_a_hand_count(tiny_model_dir, tmp_path, test_rewards, beta, extra):
    """One step, counted by hand: every generated sequence's prompt (prefill) and new tokens at 2N,
    the reference model's forward pass over them at 2N when the KL coefficient is not 0, and the
    update's forward and backward at 6N per trained token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rpt_cli.prompts import PromptBuilder, PromptConfig, encode_prompt

    records = [sample(i) for i in range(2)]
    out = tmp_path / "run"
    result = invoke(
        tiny_args(
            tiny_model_dir,
            write_samples(tmp_path / "s.jsonl", records),
            out,
            "--max-steps",
            "1",
            "--reward",
            "test-recording",
            "--beta",
            str(beta),
        )
    )
    assert result.exit_code == 0, result.output
    (step,) = read_jsonl(out / "metrics.jsonl")
    N = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    builder = PromptBuilder(tokenizer, PromptConfig(max_prompt_tokens=256))
    by_id = {r["id"]: r for r in records}
    (drawn,) = [line["drawn"] for line in read_jsonl(out / "batches.jsonl")]
    prompts = 2 * sum(len(encode_prompt(tokenizer, builder.build(by_id[i]["context"]))) for i in drawn)  # G=2
    generated = sum(len(ids) for call in test_rewards for ids in call["completion_ids"])
    assert (step["prompt_tokens"], step["generated_tokens"], step["extra_forward_passes"]) == (
        prompts,
        generated,
        extra,
    )
    assert step["trained_tokens"] == prompts + generated
    assert step["flops"] == pytest.approx(2 * N * (prompts + generated) * (1 + extra) + 6 * N * (prompts + generated))
    assert (step["scoring_s"] > 0) == bool(extra)  # the reference model's pass, timed as a pass without gradients


def test_dynamic_sampling_leaves_no_group_without_signal(tiny_model_dir, tmp_path, test_rewards, monkeypatch):
    from rpt_cli.training.trainer import RPTTrainer

    records = [sample(i, "flat") for i in range(4)] + [sample(i, "var") for i in range(4, 8)]
    samples = write_samples(tmp_path / "samples.jsonl", records)
    advantages: dict[int, list[float]] = {}
    compute_loss = RPTTrainer.compute_loss

    def observe(self, model, inputs, *args, **kwargs):  # what reaches the loss, per step
        advantages.setdefault(self.state.global_step + 1, []).extend(inputs["advantages"].tolist())
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(RPTTrainer, "compute_loss", observe)
    out = tmp_path / "run"
    args = tiny_args(
        tiny_model_dir,
        samples,
        out,
        "--reward",
        "test-controlled",
        "--max-steps",
        "4",
        "--save-steps",
        "10",
        "--contexts-per-step",
        "4",
    )
    args[args.index("--dynamic-sampling-from-step") + 1] = "2"
    result = invoke(args)
    assert result.exit_code == 0, result.output
    metrics, batches = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "batches.jsonl")
    flat_drawn = [sum(i.startswith("flat") for i in b["drawn"]) for b in batches]
    assert sum(flat_drawn[1:]) > 0, "the seeded order drew no group without signal after the switch"
    for m, b, flat in zip(metrics, batches, flat_drawn):
        step = m["step"]
        assert m["zero_variance_share_before"] == flat / 4
        trained = [i for i in b["drawn"] if i not in b["dropped"]] + b["refilled"]
        assert len(trained) == 4
        if step == 1:  # before the switch: groups without signal are trained on (advantage 0)
            assert m["zero_variance_share_after"] == flat / 4 and not b["dropped"] and not b["refilled"]
            assert (0.0 in advantages[step]) == (flat > 0)
        else:
            assert m["zero_variance_share_after"] == 0
            assert sorted(b["dropped"]) == sorted(i for i in b["drawn"] if i.startswith("flat"))
            assert not any(i.startswith("flat") for i in trained)
            assert m["reward_mean"] == pytest.approx(0.5)  # every kept group scores [1, 0]
            assert m["sampling_rounds"] >= 2 if flat else m["sampling_rounds"] == 1
            assert 0.0 not in advantages[step]
        assert len(advantages[step]) == 8


def test_dynamic_sampling_cap_keeps_the_batch_full(tiny_model_dir, tmp_path, test_rewards):
    """With nothing but groups without signal, refilling gives up after the cap and trains on the
    batch as drawn (zero advantage), saying so."""
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i, "flat") for i in range(4)])
    out = tmp_path / "run"
    args = tiny_args(
        tiny_model_dir,
        samples,
        out,
        "--reward",
        "test-controlled",
        "--max-steps",
        "1",
        "--dynamic-sampling-max-rounds",
        "2",
    )
    args[args.index("--dynamic-sampling-from-step") + 1] = "1"
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["sampling_rounds"] == 3 and m["zero_variance_share_after"] == 1.0
    assert m["groups_generated"] == 2 + 2 * 2
    assert "dynamic sampling stopped after 2 refill rounds" in result.stderr


# --------------------------------------------------------------------------------------------
# Kill and resume
# --------------------------------------------------------------------------------------------


def helper_run(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "train_helpers.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_kill_and_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, test_rewards):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(5)])
    common = ["--reward", "test-hash", "--max-steps", "6", "--save-steps", "2", "--learning-rate", "1e-2"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    # a real process, killed with SIGKILL once its first checkpoint is complete (the reward sleeps,
    # so steps take long enough to land the kill between checkpoint 2 and the end)
    first = helper_run(tiny_args(tiny_model_dir, samples, killed, *common), {"RPT_TEST_REWARD_SLEEP": "0.6"})
    deadline = time.time() + 180
    while completed_step(killed / "checkpoint-2") is None:
        assert first.poll() is None, first.communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within three minutes"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (killed / "final").exists(), "the run ended before it could be killed"
    # a checkpoint folder a kill left half written: resume must neither pick nor keep it
    (killed / "checkpoint-99").mkdir()
    (killed / "checkpoint-99" / "config.json").write_text("{")

    uninterrupted = invoke(tiny_args(tiny_model_dir, samples, reference, *common))
    assert uninterrupted.exit_code == 0, uninterrupted.output
    refused = invoke(tiny_args(tiny_model_dir, samples, killed, *common))
    assert refused.exit_code == 2 and "holds another run" in refused.stderr and "--resume" in refused.stderr
    resumed = invoke(tiny_args(tiny_model_dir, samples, killed, *common, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from checkpoint-" in resumed.stderr and "removed checkpoint-99" in resumed.stderr
    assert not (killed / "checkpoint-99").exists()

    for name in ("metrics.jsonl", "batches.jsonl"):
        assert [r["step"] for r in read_jsonl(killed / name)] == [1, 2, 3, 4, 5, 6]
    assert read_jsonl(killed / "batches.jsonl") == read_jsonl(reference / "batches.jsonl")  # same data order
    flops = [m["flops"] for m in read_jsonl(killed / "metrics.jsonl")]
    assert flops == sorted(flops) and flops[-1] == pytest.approx(read_jsonl(reference / "metrics.jsonl")[-1]["flops"])
    assert completed_step(killed / "final") == completed_step(reference / "final") == 6
    # same data, optimizer state and sampling state: the same weights, bit for bit
    from safetensors.torch import load_file

    a, b = load_file(killed / "final" / "model.safetensors"), load_file(reference / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)
    again = invoke(tiny_args(tiny_model_dir, samples, killed, *common, "--resume"))
    assert again.exit_code == 0 and "nothing to do" in again.stderr


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_two_processes_draw_the_same_order_and_refill_in_step(tiny_model_dir, tmp_path):
    """`torchrun`/`accelerate launch` with two CPU processes (gloo): each process trains on its
    share of every step, the order of contexts is the single-process one, dynamic sampling keeps
    both processes in step (they run the same number of refill rounds), and the run closes its
    process group before exit."""
    records = [sample(i, "flat") for i in range(4)] + [sample(i, "var") for i in range(4, 8)]
    samples = write_samples(tmp_path / "samples.jsonl", records)
    out = tmp_path / "run"
    args = tiny_args(
        tiny_model_dir,
        samples,
        out,
        "--reward",
        "test-controlled",
        "--contexts-per-step",
        "4",
        "--max-steps",
        "3",
        "--save-steps",
        "3",
    )
    args[args.index("--dynamic-sampling-from-step") + 1] = "2"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            str(ROOT / "tests" / "train_helpers.py"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert OPEN_GROUP_AT_EXIT not in done.stderr  # closed by rpt train, not left to exit
    assert done.stdout == f"{out / 'final'}\n"  # one process writes
    assert "x 2 processes" in done.stderr
    order = DataOrder(len(records), 4, seed=0)
    batches = read_jsonl(out / "batches.jsonl")
    assert [b["drawn"] for b in batches] == [[records[i]["id"] for i in order.step_indices(s)] for s in range(3)]
    for m, b in zip(read_jsonl(out / "metrics.jsonl")[1:], batches[1:]):
        trained = [i for i in b["drawn"] if i not in b["dropped"]] + b["refilled"]
        assert m["zero_variance_share_after"] == 0 and len(trained) == 4
        assert not any(i.startswith("flat") for i in trained)
    assert completed_step(out / "checkpoint-3") == 3 and completed_step(out / "final") == 3


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_two_nodes_through_the_multinode_launch_script(tiny_model_dir, tmp_path):
    """examples/multinode/train.sh started twice on this machine, as node 0 and node 1 of a
    two-node job (NUM_NODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, one process per node): the two
    launches form one run of two processes that trains in step and writes its files once. On a
    CPU, accelerate runs the FSDP config as plain data parallelism (gloo); the sharding itself
    needs GPUs."""
    records = [sample(i) for i in range(6)]
    samples = write_samples(tmp_path / "samples.jsonl", records)
    out = tmp_path / "run"
    args = tiny_args(tiny_model_dir, samples, out, "--max-steps", "2", "--save-steps", "2")[1:]  # drop "train"
    import socket

    with socket.socket() as free:  # a port nobody holds now, for the rendezvous of the two launches
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHON": sys.executable,
        "NUM_NODES": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "GPUS_PER_NODE": "1",
        "ACCELERATE_CONFIG": str(ROOT / "examples" / "configs" / "fsdp.yaml"),
        "ACCELERATE_EXTRA": "--mixed_precision no",
    }
    script = str(ROOT / "examples" / "multinode" / "train.sh")
    nodes = [
        subprocess.Popen(
            [script, *args],
            cwd=ROOT,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (1, 0)
    ]
    (out1, err1), (out0, err0) = (node.communicate(timeout=300) for node in nodes)
    assert [node.returncode for node in nodes] == [0, 0], err0[-3000:] + err1[-3000:]
    assert out0 == f"{out / 'final'}\n" and out1 == ""  # the first process of node 0 alone writes
    assert "x 2 processes" in err0 and "train: step 2/2" in err0 and "train: step" not in err1
    order = DataOrder(len(records), 2, seed=0)
    assert [b["drawn"] for b in read_jsonl(out / "batches.jsonl")] == [
        [records[i]["id"] for i in order.step_indices(s)] for s in range(2)
    ]
    assert orjson.loads((out / "run.json").read_bytes())["processes"] == 2
    assert completed_step(out / "final") == 2


def test_multinode_scripts_refuse_a_rank_outside_the_job(tmp_path):
    script = ROOT / "examples" / "multinode" / "train.sh"
    done = subprocess.run(
        [str(script), "samples.jsonl", "-o", str(tmp_path / "run")],
        env={**os.environ, "NUM_NODES": "2", "NODE_RANK": "2", "GPUS_PER_NODE": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "NODE_RANK 2 is not below NUM_NODES 2" in done.stderr
    server = subprocess.run(
        [str(ROOT / "examples" / "multinode" / "vllm_server.sh")],
        env={k: v for k, v in os.environ.items() if k != "MODEL"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert server.returncode != 0 and "set MODEL" in server.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="--vllm is refused earlier without vLLM")
def test_multinode_script_hands_the_server_options_to_rpt_train(tiny_model_dir, tmp_path):
    """VLLM_SERVER_HOST/PORT and VLLM_GROUP_PORT reach rpt train as options it accepts: the run gets
    as far as the server-mode check, which on this machine (no CUDA) is the refusal."""
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(2)])
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "GPUS_PER_NODE": "1",
        "MASTER_PORT": "0",
        "ACCELERATE_CONFIG": str(ROOT / "examples" / "configs" / "fsdp.yaml"),
        "ACCELERATE_EXTRA": "--mixed_precision no",
        "VLLM_SERVER_HOST": "10.0.0.9",
        "VLLM_SERVER_PORT": "8123",
        "VLLM_GROUP_PORT": "70000",  # out of range: rpt train's own check answers first
    }
    args = tiny_args(tiny_model_dir, samples, tmp_path / "run")[1:]
    done = subprocess.run(
        [str(ROOT / "examples" / "multinode" / "train.sh"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "--vllm-group-port 70000: a TCP port is between 1 and 65535" in done.stderr
    done = subprocess.run(
        [str(ROOT / "examples" / "multinode" / "train.sh"), *args],
        cwd=ROOT,
        env={**env, "VLLM_GROUP_PORT": "51300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "--vllm server needs CUDA GPUs for training" in done.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Settings: precedence and refusals
# --------------------------------------------------------------------------------------------


def test_settings_precedence_defaults_yaml_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("num-generations: 4\ncontexts_per_step: 3\nlearning_rate: 2e-6\nvllm: server\nchat: false\n")
    config = resolve_config({"contexts_per_step": 2, "model": None, "chat": None}, str(path))
    assert (config.num_completions, config.contexts_per_step, config.learning_rate) == (4, 2, 2e-6)
    assert (config.vllm, config.chat) == ("server", False)
    assert (config.temperature, config.max_steps, config.loss_type) == (0.8, 1000, "grpo")
    assert resolve_config({}) == TrainConfig()


def test_the_direct_answer_format_brings_its_own_prompt_defaults(tmp_path):
    direct = resolve_config({"answer": "direct"})
    assert (direct.answer, direct.template, direct.chat, direct.max_new_tokens) == ("direct", "direct", False, 1)
    # what the file or the command line says still wins
    path = tmp_path / "c.yaml"
    path.write_text("answer: direct\nmax_new_tokens: 4\n")
    config = resolve_config({"chat": True}, str(path))
    assert (config.template, config.chat, config.max_new_tokens) == ("direct", True, 4)
    boxed = resolve_config({})
    assert (boxed.answer, boxed.template, boxed.chat, boxed.max_new_tokens) == ("boxed", "v0", True, 8192)


def test_paper_defaults_and_shipped_configs():
    d = DEFAULTS
    assert (d.num_completions, d.contexts_per_step, d.learning_rate, d.beta, d.epsilon, d.weight_decay) == (
        8,
        256,
        1e-6,
        0.0,
        0.2,
        0.01,
    )
    assert (d.adam_beta1, d.adam_beta2, d.temperature, d.max_prompt_tokens, d.max_new_tokens) == (
        0.9,
        0.999,
        0.8,
        4096,
        8192,
    )
    assert (d.max_steps, d.loss_type, d.dynamic_sampling_from_step) == (1000, "grpo", 500)
    paper = resolve_config({}, str(ROOT / "examples" / "configs" / "paper.yaml"))
    assert paper == TrainConfig()


def test_paper_config_says_how_it_reads_the_actor_gradient_clip(tmp_path):
    """Table 5's "actor gradient clip 0.2" is the PPO clip ratio or the gradient-norm clip:
    paper.yaml takes the first (epsilon 0.2, norm clip 1.0) in so many words, and its commented
    alternative line gives the second (norm clip 0.2) as a config that loads."""
    text = (ROOT / "examples" / "configs" / "paper.yaml").read_text()
    assert re.search(r"^epsilon: 0\.2 .*clip ratio", text, re.M)
    assert re.search(r"^max_grad_norm: 1\.0 ", text, re.M)
    alternative = re.search(r"^# (max_grad_norm: 0\.2) ", text, re.M)
    assert alternative is not None
    other = tmp_path / "other.yaml"
    other.write_text(re.sub(r"^max_grad_norm: 1\.0 .*$", alternative.group(1), text, flags=re.M))
    read = resolve_config({}, str(other))
    assert (read.epsilon, read.max_grad_norm) == (0.2, 0.2)
    demo = resolve_config({}, str(ROOT / "examples" / "configs" / "cpu-demo.yaml"))
    assert demo.max_new_tokens <= 64 and not demo.gradient_checkpointing
    from accelerate.commands.config.config_args import load_config_from_file

    zero3 = load_config_from_file(str(ROOT / "examples" / "configs" / "zero3.yaml"))
    assert zero3.distributed_type == "DEEPSPEED" and zero3.deepspeed_config["zero_stage"] == 3
    assert zero3.deepspeed_config["zero3_save_16bit_model"]  # checkpoints load with transformers
    fsdp = load_config_from_file(str(ROOT / "examples" / "configs" / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")), reason="tensorboard is installed here"
)
def test_report_to_a_missing_logger_is_refused(tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    result = invoke(["train", str(samples), "-o", str(tmp_path / "run"), "--report-to", "tensorboard"])
    assert result.exit_code == 2 and "tensorboard is not installed" in result.stderr


def test_batch_plan_counts_completions_per_process():
    plan = batch_plan(TrainConfig(contexts_per_step=256, num_completions=8, micro_batch_size=16), 8)
    assert (plan.completions, plan.gradient_accumulation_steps, plan.contexts_per_process) == (2048, 16, 32)
    assert batch_plan(TrainConfig(), 1).gradient_accumulation_steps == 256


def test_options_map_onto_trl_config(tmp_path):
    from rpt_cli.training.run import grpo_args

    config = TrainConfig(
        num_completions=4,
        contexts_per_step=6,
        micro_batch_size=3,
        learning_rate=3e-6,
        lr_scheduler="cosine",
        warmup_steps=5,
        weight_decay=0.1,
        adam_beta1=0.8,
        adam_beta2=0.95,
        max_grad_norm=0.5,
        beta=0.04,
        epsilon=0.3,
        loss_type="dr_grpo",
        scale_rewards="none",
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        max_new_tokens=100,
        max_steps=7,
        save_steps=3,
        seed=11,
        gradient_checkpointing=False,
        vllm="server",
        vllm_server_host="10.0.0.2",
        vllm_server_port=8123,
        vllm_server_timeout=600.0,
        vllm_group_port=51300,
        max_prompt_tokens=200,
    )
    args = grpo_args(config, batch_plan(config, 1), tmp_path, stop_ids=[2, 7])
    assert (args.num_generations, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 3, 8)
    assert args.steps_per_generation == 8 and args.num_iterations == 1  # one generation per step: on-policy
    assert (args.learning_rate, args.lr_scheduler_type, args.warmup_steps, args.weight_decay) == (
        3e-6,
        "cosine",
        5,
        0.1,
    )
    assert (args.adam_beta1, args.adam_beta2, args.max_grad_norm, args.beta, args.epsilon) == (
        0.8,
        0.95,
        0.5,
        0.04,
        0.3,
    )
    assert (args.loss_type, args.scale_rewards, args.temperature, args.top_p, args.top_k) == (
        "dr_grpo",
        "none",
        0.7,
        0.9,
        20,
    )
    assert (args.max_completion_length, args.max_steps, args.save_steps, args.seed) == (100, 7, 3, 11)
    assert args.save_total_limit is None and args.logging_steps == 1 and not args.gradient_checkpointing
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_host, args.vllm_server_port) == (
        True,
        "server",
        "10.0.0.2",
        8123,
    )
    assert (args.vllm_server_timeout, args.vllm_group_port, args.vllm_max_model_length) == (600.0, 51300, 300)
    assert args.generation_kwargs == {"stop_token_ids": [2, 7]}  # vLLM stops where rpt rollout stops
    without = TrainConfig(**{**config.as_dict(), "vllm": None})
    assert grpo_args(without, batch_plan(without, 1), tmp_path).generation_kwargs is None  # generate: RPTTrainer's


def test_generation_stops_are_the_rollout_stops(tiny_model_dir):
    from transformers import AutoTokenizer, GenerationConfig

    from rpt_cli.generation.base import stop_token_ids
    from rpt_cli.training.run import generation_stops

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    stops = generation_stops(tokenizer, str(tiny_model_dir))
    assert stops == stop_token_ids(tokenizer, GenerationConfig.from_pretrained(tiny_model_dir))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops  # the chat template's end of turn


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-G", "1"], "--num-completions must be at least 2"),
        (["-G", "2", "--contexts-per-step", "3", "--micro-batch-size", "4"], "batch not divisible"),
        (["-G", "2", "--contexts-per-step", "2", "--micro-batch-size", "64"], "--micro-batch-size 64 exceeds"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--loss-type", "ppo"], "--loss-type ppo: choose one of"),
        (["--reward", "nope"], "--reward nope: choose one of"),
        (["--vllm", "remote"], "--vllm remote: choose colocate"),
        (["--vllm-group-port", "70000"], "--vllm-group-port 70000: a TCP port is between 1 and 65535"),
        (["--vllm-server-timeout", "0"], "--vllm-server-timeout must be positive"),
        (["--template", "missing.txt"], "--template: template missing.txt"),
        (["--answer", "free"], "--answer free: choose boxed or direct"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tmp_path, extra, message):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    result = invoke(["train", str(samples), "-o", str(tmp_path / "run"), "--model", "/no/such/model", *extra])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_bad_samples_and_folders(tmp_path):
    def run(samples: Path, out: Path, *extra: str):
        return invoke(["train", str(samples), "-o", str(out), "--model", "/no/such/model", *extra])

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert f"error: {empty}: no samples" in run(empty, tmp_path / "a").stderr
    bad = write_samples(tmp_path / "bad.jsonl", [sample(0), {**sample(1), "boundaries": [3, 2]}])
    result = run(bad, tmp_path / "a")
    assert result.exit_code == 2 and f"error: {bad}:2: " in result.stderr and "strictly increasing" in result.stderr
    good = write_samples(tmp_path / "good.jsonl", [sample(0)])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "holds no rpt train run" in run(good, foreign).stderr
    assert "not standard input" in invoke(["train", "-", "-o", str(tmp_path / "b")]).stderr
    settings = tmp_path / "s.yaml"
    settings.write_text("max_steps: 3\nlearnig_rate: 1e-6\n")
    result = run(good, tmp_path / "c", "--config", str(settings))
    assert f"error: {settings}:2: unknown option 'learnig_rate' (did you mean learning_rate?)" in result.stderr
    settings.write_text("max_steps: three\n")
    assert (
        f"error: {settings}:1: max_steps: expected an integer"
        in run(good, tmp_path / "c", "--config", str(settings)).stderr
    )


def test_resume_refuses_changed_settings_or_samples(tmp_path):
    from rpt_cli.training.checkpoints import mark_complete
    from rpt_cli.training.config import dump_config
    from rpt_cli.training.data import read_samples
    from rpt_cli.training.run import plan_output

    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(3)])
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-6").mkdir()  # no marker: an interrupted save
    mark_complete(out / "checkpoint-4", 4)
    config = TrainConfig(samples=str(samples), output=str(out), max_steps=10)
    dump_config(config, out / "config.yaml")
    (out / "run.json").write_text(orjson.dumps({"samples_sha256": read_samples(str(samples)).sha256}).decode())
    plan = plan_output(config, read_samples(str(samples)), resume=True)
    assert (plan.resume_step, plan.resume_from) == (4, out / "checkpoint-4")
    longer = TrainConfig(samples=str(samples), output=str(out), max_steps=20, save_steps=5)
    assert plan_output(longer, read_samples(str(samples)), resume=True).resume_step == 4
    changed = invoke(["train", str(samples), "-o", str(out), "--resume", "--max-steps", "10", "--lr", "3e-6"])
    assert changed.exit_code == 2 and "--learning-rate 3e-06 (the run used 1e-06)" in changed.stderr
    write_samples(samples, [sample(i) for i in range(4)])
    other = invoke(["train", str(samples), "-o", str(out), "--resume", "--max-steps", "10"])
    assert other.exit_code == 2 and "is not the samples file the run" in other.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="--vllm is refused earlier without vLLM")
def test_vllm_server_mode_is_refused_without_cuda_before_anything_loads(tmp_path):
    """TRL 1.16 updates the server's weights over NCCL and raises NotImplementedError on a CPU
    trainer once the model has loaded (docs/train.md, "Several machines"); rpt says so first."""
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    result = invoke(
        ["train", str(samples), "-o", str(tmp_path / "run"), "--model", "/no/such/model", "--vllm", "server"]
    )
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.startswith("error: --vllm server needs CUDA GPUs for training") and result.stderr.count("\n") == 1
    )
    assert not (tmp_path / "run").exists()


def test_refusals_happen_before_heavy_imports(tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    code = (
        "import sys; from rpt_cli.cli import app\n"
        f"try:\n    app(['train', {str(samples)!r}, '-o', {str(tmp_path / 'r')!r}, '-G', '1'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, [m for m in ('torch', 'transformers', 'trl') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "2 []", done.stderr


# --------------------------------------------------------------------------------------------
# Pure pieces: data order, zero-variance groups, merging rounds
# --------------------------------------------------------------------------------------------


def test_data_order_is_a_pure_function_of_seed_and_step():
    order = DataOrder(num_samples=10, contexts_per_step=4, seed=3)
    stream = [i for step in range(5) for i in order.step_indices(step)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream == [i for step in range(5) for i in DataOrder(10, 4, 3).step_indices(step)]
    assert stream != [i for step in range(5) for i in DataOrder(10, 4, 4).step_indices(step)]
    sampler = StepSampler(order, num_generations=2, repeat_count=3, steps=2)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 2 * 3 * 4 * 2
    first = order.step_indices(0)
    assert indices[:8] == [i for i in first for _ in range(2)] and indices[8:16] == indices[:8]
    longer = StepSampler(order, num_generations=2, repeat_count=3, steps=4)
    assert list(longer)[: len(indices)] == indices  # raising --max-steps only extends the order


def test_refills_never_repeat_a_context_within_a_step_and_prefer_unseen_ones():
    order = DataOrder(num_samples=20, contexts_per_step=4, seed=3)
    step = 1  # contexts 4..7 of the first pass
    own = set(order.step_indices(step))
    # two processes, two rounds of 3 contexts each, as the trainer slices the stream
    taken = [order.refill_indices(step, start, 3) for start in (0, 3, 6, 9)]
    flat = [i for part in taken for i in part]
    assert len(set(flat)) == 12 and not own & set(flat)
    unseen = set(order._permutation(0)[8:])  # not yet reached in this pass
    assert set(flat) <= unseen
    assert order.refill_indices(step, 0, 3) == taken[0]  # a pure function of the step: resumes redraw it
    # more refills than other samples: every other sample once before any repeats
    stream = order.refill_indices(step, 0, 16)
    assert sorted(stream) == sorted(set(range(20)) - own)
    assert order.refill_indices(step, 16, 1) == stream[:1]
    # a step that holds every sample still gets refills
    assert len(DataOrder(4, 4, 0).refill_indices(0, 0, 2)) == 2


def test_zero_variance_groups_and_merging_rounds():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, float("nan"), 0.5, float("nan"), float("nan")])
    assert zero_variance_groups(rewards, 2).tolist() == [True, False, True, True]
    a = {
        "prompt_ids": torch.tensor([[5, 6]]),
        "prompt_mask": torch.tensor([[1, 1]]),
        "completion_ids": torch.tensor([[7]]),
        "completion_mask": torch.tensor([[1]]),
        "advantages": torch.tensor([0.5]),
    }
    b = {
        "prompt_ids": torch.tensor([[8, 9, 10]]),
        "prompt_mask": torch.tensor([[1, 1, 1]]),
        "completion_ids": torch.tensor([[11, 12]]),
        "completion_mask": torch.tensor([[1, 1]]),
        "advantages": torch.tensor([-0.5]),
    }
    merged = concat_rows([a, b], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 5, 6], [8, 9, 10]]
    assert merged["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[7, 0], [11, 12]]
    assert merged["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert merged["advantages"].tolist() == [0.5, -0.5]


def test_the_progress_line_says_where_the_time_went(tmp_path):
    from rpt_cli.console import stderr
    from rpt_cli.training.log import RunLog

    line = RunLog(tmp_path, 10, stderr).progress_line(
        {
            "step": 2,
            "reward_mean": 0.5,
            "reward_std": 0.5,
            "zero_variance_share_before": 0.0,
            "zero_variance_share_after": 0.0,
            "sampling_rounds": 1,
            "no_prediction_share": 0.0,
            "completion_length_mean": 1.0,
            "truncated_share": 0.0,
            "learning_rate": 1e-6,
            "step_time_s": 10.0,
            "generation_s": 4.04,
            "reward_s": 0.01,
            "scoring_s": 0.0,
            "train_s": 5.0,
            "optimizer_s": 0.9,
            "tokens_per_s": 123.0,
        }
    )
    assert "| 10.0 s (gen 4.0 + fwd/bwd 5.0 + opt 0.9), 123 tok/s |" in line
