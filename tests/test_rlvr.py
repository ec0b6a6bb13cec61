"""The RLVR recipe (examples/rlvr): GRPO with TRL's own command line on question/answer data and
the math-verify reward. Real TRL (`trl grpo`, run by examples/rlvr/run.sh), real math-verify, the
tiny random Llama as the checkpoint; its rewards are checked against math-verify called here on
the very completions TRL generated, and its checkpoints and logged metrics against those rewards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("math_verify")

RECIPE = ROOT / "examples" / "rlvr"


def _load_math_reward():
    """examples/rlvr/math_reward.py, loaded from its file (the recipe puts its folder on PYTHONPATH)."""
    spec = importlib.util.spec_from_file_location("rlvr_math_reward", RECIPE / "math_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.math_reward


math_reward = _load_math_reward()

# the two tiny examples: one answer a number, one a fraction; the tiny model's tokenizer was
# trained on text holding "\boxed{3}", digits and "\frac{1}{2}", so its random completions hold them too
QUESTIONS = [
    {"prompt": [{"role": "user", "content": "Let x^2 - 5x + 6 = 0 with x > 2. Put x in \\boxed{}."}], "answer": "3"},
    {"prompt": [{"role": "user", "content": "What is 1/4 + 1/4? Put it in \\boxed{}."}], "answer": "\\frac{1}{2}"},
]

# a reward function of the user's: the recipe's math reward, recording what TRL gave it and what it returned
RECORDING_REWARD = """
import json, os
from math_reward import math_reward

def recorded(prompts, completions, answer, trainer_state, **kwargs):
    rewards = math_reward(completions, answer)
    with open(os.environ["RLVR_TEST_RECORD"], "a") as f:
        f.write(json.dumps({"step": trainer_state.global_step, "prompts": prompts, "completions": completions,
                            "answer": answer, "rewards": rewards}) + "\\n")
    return rewards
"""


def math_verify_reward(completion: str, answer: str) -> float:
    """math-verify itself, on the text after the last </think>."""
    from math_verify import parse, verify

    gold = parse(f"${answer}$")
    guess = parse(completion.rpartition("</think>")[2])
    return float(bool(guess) and verify(gold, guess))


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("So the sum is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", 1.0),
        ("So the sum is \\boxed{0.5}.", "\\frac{1}{2}", 1.0),  # equal as numbers, not as text
        ("<think>maybe \\boxed{3}?</think> no: \\boxed{2}", "3", 0.0),  # a guess while thinking does not count
        ("<think>2 or 3</think> The answer is \\boxed{3}.", "3", 1.0),
        ("The answer is $x^2 + 2x + 1$.", "(x+1)^2", 1.0),  # the last LaTeX expression, no \boxed{}
        ("I do not know.", "42", 0.0),
    ],
)
def test_math_reward_is_math_verify_after_the_thinking(completion, answer, expected):
    assert math_reward([completion], [answer]) == [expected]
    assert math_reward([[{"role": "assistant", "content": completion}]], [answer]) == [expected]  # chat form
    assert math_verify_reward(completion, answer) == expected


def write_questions(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def run_recipe(model: str, data: Path, output: Path, cwd: Path, *extra: str, **env: str):
    environment = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HF_DATASETS_CACHE": str(cwd / "datasets-cache"),
        "RLVR_CONFIG": str(RECIPE / "cpu.yaml"),
        **env,
    }
    command = ["bash", str(RECIPE / "run.sh"), model, str(data), str(output), *extra]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def answering_model(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny random model, taught in 60 small steps to answer every question with `\\boxed{3}`:
    its sampled completions are then right for one question some of the time and wrong for the
    other, so the rewards hold both 1.0 and 0.0 (a random model's completions all score 0)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    prompts = [
        tokenizer.apply_chat_template(q["prompt"], tokenize=False, add_generation_prompt=True) for q in QUESTIONS
    ]
    batch = tokenizer([p + "\\boxed{3}<|im_end|>" for p in prompts], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    for row, prompt in enumerate(prompts):  # learn the answer, not the question
        labels[row, : len(tokenizer(prompt).input_ids)] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_grpo_on_two_questions_rewards_what_math_verify_says(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = answering_model(tiny_model_dir, tmp_path / "checkpoint")
    data = write_questions(tmp_path / "questions", QUESTIONS)
    (tmp_path / "recording.py").write_text(RECORDING_REWARD)  # importable from the working directory
    record, output = tmp_path / "record.jsonl", tmp_path / "rlvr"
    done = run_recipe(
        str(model),
        data,
        output,
        tmp_path,
        *("--num_generations", "8", "--per_device_train_batch_size", "8", "--max_completion_length", "16"),
        *("--temperature", "1.0"),
        RLVR_REWARD="recording:recorded",
        RLVR_TEST_RECORD=str(record),
    )
    assert done.returncode == 0, done.stderr[-3000:]

    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [call["step"] for call in calls] == [0, 1]  # cpu.yaml: two steps
    answer_of = {q["prompt"][0]["content"]: q["answer"] for q in QUESTIONS}
    for call in calls:
        assert len(call["completions"]) == 8  # G completions of one question per step
        for prompt, completion, answer, reward in zip(
            call["prompts"], call["completions"], call["answer"], call["rewards"], strict=True
        ):
            assert answer == answer_of[prompt[-1]["content"]]  # each completion scored against its own question
            [message] = completion
            assert reward == math_verify_reward(message["content"], answer)
    assert {reward for call in calls for reward in call["rewards"]} == {0.0, 1.0}

    # TRL logged those rewards, checkpointed every step, and saved the final model
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "rewards/recorded/mean" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    for entry, call in zip(logged, calls):
        assert entry["rewards/recorded/mean"] == pytest.approx(sum(call["rewards"]) / len(call["rewards"]))
    assert (output / "checkpoint-1" / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(output)


@pytest.mark.parametrize(
    "reward, line, message",
    [
        (
            "no_such_module.reward",
            None,
            "error: RLVR_REWARD no_such_module.reward: cannot import module 'no_such_module'",
        ),
        (
            "math_reward.no_such_function",
            None,
            "error: RLVR_REWARD math_reward.no_such_function: module 'math_reward' has no",
        ),
        ("math_reward:THINK_END", None, "is not callable"),
        ("math_reward.math_reward", '{"prompt": "What is 2 + 2?", "answer": 4}', 'train.jsonl:2: field "answer" must'),
        ("math_reward.math_reward", '{"question": "2 + 2?", "answer": "4"}', 'train.jsonl:2: missing field "prompt"'),
        (
            "math_reward.math_reward",
            '{"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"}',
            "train.jsonl:2: field",
        ),
    ],
)
def test_bad_reward_paths_and_records_stop_the_recipe_in_one_line(tiny_model_dir, tmp_path, reward, line, message):
    records = [json.dumps({"prompt": "What is 1 + 1?", "answer": "2"})] + ([line] if line else [])
    data = tmp_path / "questions"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(records) + "\n")
    output = tmp_path / "rlvr"
    done = run_recipe(str(tiny_model_dir), data, output, tmp_path, RLVR_REWARD=reward)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not output.exists()


def test_a_missing_model_or_data_folder_stops_the_recipe(tmp_path):
    data = write_questions(tmp_path / "questions", QUESTIONS)
    done = run_recipe(str(tmp_path / "no-model"), data, tmp_path / "out", tmp_path)
    assert done.returncode == 2 and "no-model" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_recipe(str(tmp_path / "no-model"), tmp_path / "no-data", tmp_path / "out", tmp_path)
    assert done.returncode == 2 and "no-data: no such folder" in done.stderr


def test_held_out_questions_score_with_the_same_verifier_in_rpt_downstream(tiny_model_dir, tmp_path, monkeypatch):
    """examples/rlvr/tasks: the recipe's test questions as an lm-eval task (the paper's Table 2 accuracy)."""
    pytest.importorskip("lm_eval")
    from typer.testing import CliRunner

    from rpt_cli.cli import app

    monkeypatch.chdir(ROOT)  # the task reads its data relative to the working directory
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    details = tmp_path / "details.jsonl"
    args = ["downstream", "-m", str(tiny_model_dir), "--include-path", str(RECIPE / "tasks"), "-t", "rlvr_math"]
    options = ["--chat", "--max-new-tokens", "24", "--temperature", "1.0", "--limit", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, *options, "--details", str(details)])
    assert result.exit_code == 0, result.output
    [report] = [json.loads(line) for line in result.stdout.splitlines()]
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    questions = [json.loads(line) for line in (RECIPE / "data" / "test.jsonl").read_text().splitlines()][:2]
    assert [row["doc"] for row in sorted(rows, key=lambda r: r["doc_id"])] == questions
    scores = []
    for row in rows:
        [[prompt, _]] = row["arguments"]
        assert prompt.startswith("<|im_start|>user\n" + row["doc"]["prompt"][-1]["content"])
        scores.append(math_verify_reward(row["filtered_resps"][0], row["doc"]["answer"]))
        assert row["acc"] == scores[-1]
    assert report["n"] == 2 and report["metrics"]["acc,none"] == pytest.approx(sum(scores) / 2)


def test_the_papers_rlvr_settings_ship_as_a_trl_config(tmp_path):
    """examples/rlvr/paper.yaml is Section 4.3 as TRL reads it: 64 questions per optimizer step and
    per generation (PPO mini-batch = batch = 64), 15 epochs; its header gives the paper's
    evaluation (32,000 tokens, temperature 0.6) as an rpt downstream command."""
    import yaml
    from trl import GRPOConfig

    text = (RECIPE / "paper.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    values.pop("bf16")  # a GPU setting; the batch arithmetic is the same on a CPU
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **values)
    G = args.num_generations
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps // G == 64  # batch, in questions
    assert args.generation_batch_size // G == 64  # one generation per optimizer step: mini-batch = batch
    assert args.num_train_epochs == 15
    assert "--max-new-tokens 32000 --temperature 0.6" in text
