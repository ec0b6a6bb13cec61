"""`rpt downstream`: lm-evaluation-harness on a checkpoint folder, with a local task (the shipped
examples/downstream quiz: a YAML task and its JSONL file, no network). Real lm-eval, the tiny
random Llama saved to disk; the scores are checked against log-likelihoods computed here with
transformers, and the settings against what lm-eval put to the model."""

from __future__ import annotations

import math

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from tests.conftest import ROOT

pytest.importorskip("lm_eval")

QUIZ = ROOT / "examples" / "downstream"
runner = CliRunner()


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def local_tasks(monkeypatch, tmp_path):
    """lm-eval reads the quiz's data_files relative to the working directory; datasets caches
    what it reads, here in the test's own folder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context) summed over the continuation's tokens, the continuation's
    tokens being those the whole text has after the context's (how lm-eval splits the pair)."""
    import torch

    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(n_context, len(whole)))


def test_local_task_scores_equal_a_direct_loglikelihood_comparison(tiny_model_dir, tmp_path, local_tasks):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report_file, details_file = tmp_path / "report.jsonl", tmp_path / "details.jsonl"
    args = ["downstream", "-m", str(tiny_model_dir), "--include-path", str(QUIZ), "--task", "rpt_quiz"]
    result = runner.invoke(app, [*args, "-o", str(report_file), "--details", str(details_file), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    [report] = read_jsonl(report_file)
    assert (report["task"], report["n"], report["model_path"]) == ("rpt_quiz", 4, str(tiny_model_dir))
    assert "rpt_quiz" in result.stderr and "acc" in result.stderr  # the table for people

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    documents = read_jsonl(QUIZ / "quiz.jsonl")
    details = sorted(read_jsonl(details_file), key=lambda d: d["doc_id"])
    assert [d["doc"] for d in details] == documents
    correct = correct_norm = 0
    for doc, detail in zip(documents, details):
        ours = [loglikelihood(model, tokenizer, doc["question"], " " + choice) for choice in doc["choices"]]
        theirs = [resp[0] for resp in detail["filtered_resps"]]
        assert theirs == pytest.approx(ours, abs=1e-4)
        best = max(range(len(ours)), key=ours.__getitem__)
        best_norm = max(range(len(ours)), key=lambda i: ours[i] / len(doc["choices"][i]))
        correct += best == doc["label"]
        correct_norm += best_norm == doc["label"]
        assert (detail["acc"], detail["acc_norm"]) == (float(best == doc["label"]), float(best_norm == doc["label"]))
    assert report["metrics"]["acc,none"] == pytest.approx(correct / 4)
    assert report["metrics"]["acc_norm,none"] == pytest.approx(correct_norm / 4)
    p = correct / 4
    assert report["stderr"]["acc,none"] == pytest.approx(math.sqrt(p * (1 - p) / 3))  # sample standard error


def test_chat_and_generation_settings_reach_lm_eval(tiny_model_dir, tmp_path, monkeypatch):
    """A generation task of one's own, in a folder of its own: --chat wraps each question in the
    model's chat template, --system-instruction opens it, and the sampling options become lm-eval's
    gen_kwargs for the task."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "sums.jsonl"
    data.write_text('{"q": "1 + 1 =", "a": "2"}\n{"q": "2 + 2 =", "a": "4"}\n{"q": "3 + 3 =", "a": "6"}\n')
    (tasks / "sums.yaml").write_text(
        "task: tiny_sums\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: generate_until\n"
        'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        'generation_kwargs:\n  until: ["\\n\\n"]\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    details_file = tmp_path / "details.jsonl"
    result = runner.invoke(
        app,
        [
            "downstream",
            "-m",
            str(tiny_model_dir),
            "--include-path",
            str(tasks),
            "-t",
            "tiny_sums",
            "--limit",
            "2",
            "--chat",
            "--system-instruction",
            "Answer with a number.",
            "--max-new-tokens",
            "3",
            "--temperature",
            "0",
            "--device",
            "cpu",
            "--details",
            str(details_file),
        ],
    )
    assert result.exit_code == 0, result.output
    [report] = read_jsonl_text(result.stdout)
    assert report["n"] == 2 and report["settings"]["chat"] is True
    details = read_jsonl(details_file)
    assert len(details) == 2
    for detail in details:
        [[prompt, gen_kwargs]] = detail["arguments"]
        assert prompt == (
            "<|im_start|>system\nAnswer with a number.<|im_end|>\n"
            f"<|im_start|>user\n{detail['doc']['q']}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert gen_kwargs["max_gen_toks"] == 3 and gen_kwargs["do_sample"] is False
        assert gen_kwargs["temperature"] == 0 and gen_kwargs["until"] == ["\n\n"]
        assert detail["exact_match"] == float(detail["filtered_resps"][0].strip() == detail["doc"]["a"])


def read_jsonl_text(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "error: no task: give at least one --task"),
        (
            ["-t", "rpt_quiz", "--include-path", "no/such/folder"],
            "error: --include-path no/such/folder: no such folder",
        ),
        (["-t", "rpt_quiz", "--model-args", "dtype"], "error: --model-args dtype: expected key=value pairs"),
        (["-t", "rpt_quiz", "--contexts-per-call", "0"], "error: --contexts-per-call 0: expected a positive integer"),
        (["-t", "rpt_quiz", "--temperature", "-1"], "error: --temperature must not be negative"),
        (["-t", "rpt_quiz", "--include-path", str(QUIZ), "-m", "no/such/model"], "no/such/model"),
        (
            ["-t", "rpt_qiuz", "--include-path", str(QUIZ)],
            "error: --task rpt_qiuz: lm-eval has no such task (did you mean rpt_quiz",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_any_model_loads(extra, message, tmp_path, local_tasks):
    out = tmp_path / "report.jsonl"
    result = runner.invoke(app, ["downstream", *extra, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_list_tasks_includes_local_tasks(local_tasks):
    result = runner.invoke(app, ["downstream", "--include-path", str(QUIZ), "--list-tasks"])
    assert result.exit_code == 0, result.output
    names = result.stdout.split()
    assert "rpt_quiz" in names and "arc_easy" in names and names == sorted(names)


def test_key_value_pairs_and_generation_kwargs():
    from rpt_cli.downstream import generation_kwargs, parse_pairs, split_tasks

    assert parse_pairs("enable_thinking=true,max_length=4096,scale=0.5,name=x", "--model-args") == {
        "enable_thinking": True,
        "max_length": 4096,
        "scale": 0.5,
        "name": "x",
    }
    assert parse_pairs(None, "--gen-kwargs") == {}
    assert generation_kwargs(max_new_tokens=8, temperature=0.6, top_p=0.95, top_k=None, extra={}) == {
        "max_gen_toks": 8,
        "temperature": 0.6,
        "do_sample": True,
        "top_p": 0.95,
    }
    # nothing given: each task keeps its own generation settings
    assert generation_kwargs(max_new_tokens=None, temperature=None, top_p=None, top_k=None, extra={}) == {}
    assert split_tasks(["mmlu_pro,gpqa", "mmlu_pro", " arc_easy "]) == ("mmlu_pro", "gpqa", "arc_easy")


def test_the_supergpqa_task_puts_lettered_options_and_reads_the_last_letter(tiny_model_dir, tmp_path, monkeypatch):
    """examples/downstream/supergpqa.yaml, its data set swapped for two records of SuperGPQA's own
    shape (m-a-p/SuperGPQA: question, options, answer_letter, ...) so that it runs offline, with
    the paper's reasoning-mode settings (Section 4.4: 12,288 tokens, temperature 0.8)."""
    import re

    import yaml

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    shipped = (QUIZ / "supergpqa.yaml").read_text(encoding="utf-8")
    task = yaml.safe_load(shipped)
    assert (task["dataset_path"], task["test_split"], task["doc_to_target"]) == (
        "m-a-p/SuperGPQA",
        "train",
        "answer_letter",
    )
    assert task["generation_kwargs"]["max_gen_toks"] == 12288 and task["generation_kwargs"]["temperature"] == 0.8
    # the answer is the response's last "answer is X" or \boxed{X}
    pattern = re.compile(task["filter_list"][0]["filter"][0]["regex_pattern"])
    assert pattern.findall("maybe the answer is (C); checking, \\boxed{B}")[-1] == "B"
    assert pattern.findall("The answer is J.") == ["J"] and pattern.findall("\\boxed{K}") == []
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "supergpqa.jsonl"
    records = [
        {"uuid": "u1", "question": "2 + 2 =", "options": ["3", " 4 ", "5"], "answer": "4", "answer_letter": "B"},
        {
            "uuid": "u2",
            "question": "Which is a prime?",
            "options": ["4", "6", "8", "9", "7"],
            "answer": "7",
            "answer_letter": "E",
        },
    ]
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    local = shipped.replace(
        "dataset_path: m-a-p/SuperGPQA", f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {data}"
    )
    (tasks / "supergpqa.yaml").write_text(local, encoding="utf-8")
    details_file = tmp_path / "details.jsonl"
    args = ["downstream", "-m", str(tiny_model_dir), "--include-path", str(tasks), "-t", "supergpqa"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "4", "--device", "cpu", "--details", str(details_file)])
    assert result.exit_code == 0, result.output
    [report] = read_jsonl_text(result.stdout)
    assert report["n"] == 2 and "exact_match,custom-extract" in report["metrics"]
    for detail, record in zip(read_jsonl(details_file), records):
        [[prompt, gen_kwargs]] = detail["arguments"]
        letters = "ABCDEFGHIJ"
        options = "".join(f"{letters[i]}. {o.strip()}\n" for i, o in enumerate(record["options"]))
        assert prompt == f"Question:\n{record['question']}\nOptions:\n{options}Answer: Let's think step by step."
        assert detail["target"] == record["answer_letter"]
        assert gen_kwargs["max_gen_toks"] == 4 and gen_kwargs["temperature"] == 0.8
