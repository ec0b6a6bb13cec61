"""`rpt train --objective coldstart`: examples the model makes itself in the paper's answer format,
trained with TRL's SFTTrainer on the completions, in a run folder like every other objective's.

On the tiny random model of conftest.py; the built-in model's cold start, followed by boxed RPT
that raises its reward, is tests/test_learning.py's.
"""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.reward.extract import extract_prediction
from rpt_cli.training.coldstart import Candidate, completion_text, quoted, thought
from tests.test_train import sample, write_samples

runner = CliRunner()


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def coldstart_args(model, samples, out, *extra: str) -> list[str]:
    return [
        "train",
        str(samples),
        "-o",
        str(out),
        "--model",
        str(model),
        "--objective",
        "coldstart",
        "--contexts-per-step",
        "2",
        "--max-prompt-tokens",
        "256",
        "--no-gradient-checkpointing",
        *extra,
    ]


def test_the_thought_names_candidates_and_the_box_holds_the_answer():
    candidates = [Candidate(" terms", 0.62), Candidate(' "', 0.1), Candidate("\n", 0.05)]
    text = completion_text(candidates, candidates[0])
    assert text == '" terms" 62%; also " \\"" 10%, "\\n" 5%</think> \\boxed{ terms}'
    # the reward reads exactly the chosen token back, leading space included
    assert extract_prediction(text, require_think=True) == " terms"
    assert extract_prediction(completion_text(candidates, candidates[2]), require_think=True) == "\n"
    # the answer leads, whichever candidate it is; a token outside the candidates leads them all
    assert thought(candidates, candidates[1]) == '" \\"" 10%; also " terms" 62%, "\\n" 5%'
    truth = Candidate(" like", 0.01)
    assert thought(candidates, truth) == '" like" 1%; also " terms" 62%, " \\"" 10%, "\\n" 5%'
    assert thought(candidates[:1], candidates[0]) == '" terms" 62%'
    assert quoted("a\\b") == '"a\\\\b"'


@pytest.fixture
def samples_file(tmp_path):
    return write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(4)])


def test_examples_answer_with_the_models_own_first_choice(tiny_model_dir, samples_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, coldstart_args(tiny_model_dir, samples_file, out, "--max-steps", "2", "--no-chat"))
    assert result.exit_code == 0, result.output
    assert "train: coldstart: 4 examples; answers: the model's own first choice" in result.output
    examples = read_jsonl(out / "coldstart.jsonl")
    assert [e["id"] for e in examples] == ["s0", "s1", "s2", "s3"]
    # the greedy next token of `rpt eval --mode ntp` on the same contexts, where it is whole text
    details = tmp_path / "details.jsonl"
    evaluated = runner.invoke(
        app,
        ["eval", str(samples_file), "-m", str(tiny_model_dir), "--mode", "ntp", "--max-context-tokens", "256"]
        + ["--details", str(details)],
    )
    assert evaluated.exit_code == 0, evaluated.output
    greedy = {row["id"]: row for row in read_jsonl(details)}
    compared = 0
    for example in examples:
        probabilities = [p for _, p in example["candidates"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert example["answer"] == example["candidates"][0][0] and example["answer_source"] == "own"
        assert extract_prediction(example["completion"], require_think=True) == example["answer"]
        row = greedy[example["id"]]
        if row["prediction"] is not None:
            compared += 1
            assert example["answer"] == row["prediction"]
            assert example["answer_correct"] == row["correct"]
    assert compared, "the tiny model's greedy tokens should include whole-text ones"
    steps = read_jsonl(out / "metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2] and all(s["loss"] > 0 for s in steps)
    assert (out / "final" / "config.json").is_file()


def test_truth_answers_box_the_true_next_token(tiny_model_dir, samples_file, tmp_path):
    out = tmp_path / "run"
    args = coldstart_args(tiny_model_dir, samples_file, out, "--max-steps", "1", "--coldstart-answer", "truth")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for record, example in zip([sample(i) for i in range(4)], read_jsonl(out / "coldstart.jsonl")):
        assert example["answer_source"] == "truth" and example["answer_correct"] is True
        assert example["answer"] == record["target"][: record["boundaries"][0]]
        assert extract_prediction(example["completion"], require_think=True) == example["answer"]


def test_sampled_answers_follow_the_models_distribution_reproducibly(tiny_model_dir, tmp_path):
    """`sample` draws each answer from the model's own distribution, by the run's seed and the
    sample's id: the same draws on a rerun, other draws under another seed."""
    records = [sample(i % 4, prefix=f"r{i}-") for i in range(24)]
    samples = write_samples(tmp_path / "many.jsonl", records)

    def answers(name: str, seed: str) -> list[dict]:
        out = tmp_path / name
        args = coldstart_args(tiny_model_dir, samples, out, "--max-steps", "1", "--coldstart-answer", "sample")
        result = runner.invoke(app, args + ["--seed", seed])
        assert result.exit_code == 0, result.output
        assert "answers: drawn from the model's own distribution" in result.output
        return read_jsonl(out / "coldstart.jsonl")

    first, again, other = answers("a", "0"), answers("b", "0"), answers("c", "1")
    assert [e["answer"] for e in first] == [e["answer"] for e in again]
    assert [e["answer"] for e in first] != [e["answer"] for e in other]
    # the tiny random model spreads its probability thin: its draws are mostly not its first choice
    assert sum(e["answer"] != e["candidates"][0][0] for e in first) >= 12
    for example in first:
        assert example["answer_source"] == "sample"
        assert extract_prediction(example["completion"], require_think=True) == example["answer"]
        assert example["completion"].startswith(quoted(example["answer"]))


def test_the_loss_falls_on_the_examples(tiny_model_dir, tmp_path):
    """Two examples, seen again every step at a high learning rate: supervised training must
    bring their completion loss down (an optimizer that never steps, or labels that miss the
    completion, leave it flat)."""
    samples = write_samples(tmp_path / "two.jsonl", [sample(i) for i in range(2)])
    out = tmp_path / "run"
    args = coldstart_args(tiny_model_dir, samples, out, "--max-steps", "12", "--learning-rate", "3e-3", "--no-chat")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    losses = [s["loss"] for s in read_jsonl(out / "metrics.jsonl")]
    assert losses[-1] < 0.75 * losses[0], losses


def test_resume_goes_on_only_with_the_runs_settings(tiny_model_dir, samples_file, tmp_path):
    out = tmp_path / "run"
    first = runner.invoke(
        app, coldstart_args(tiny_model_dir, samples_file, out, "--max-steps", "2", "--save-steps", "1")
    )
    assert first.exit_code == 0, first.output
    changed = coldstart_args(tiny_model_dir, samples_file, out, "--max-steps", "3", "--coldstart-answer", "truth")
    refused = runner.invoke(app, changed + ["--resume"])
    assert refused.exit_code == 2
    assert "--coldstart-answer 'truth' (the run used 'own')" in refused.output
    same = runner.invoke(app, coldstart_args(tiny_model_dir, samples_file, out, "--max-steps", "3") + ["--resume"])
    assert same.exit_code == 0, same.output
    assert [s["step"] for s in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--answer", "direct"], "--objective coldstart teaches the boxed answer format"),
        (["--coldstart-answer", "best"], "--coldstart-answer best: choose own, sample or truth"),
        (["--coldstart-candidates", "0"], "--coldstart-candidates must be between 1 and 20, got 0"),
    ],
)
def test_bad_settings_stop_in_one_line(tiny_model_dir, samples_file, tmp_path, extra, message):
    out = tmp_path / "run"
    result = runner.invoke(app, coldstart_args(tiny_model_dir, samples_file, out, *extra))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_template_without_a_context_slot_is_refused(tiny_model_dir, samples_file, tmp_path):
    template = tmp_path / "template.txt"
    template.write_text("Predict the next token.\n")
    out = tmp_path / "run"
    result = runner.invoke(app, coldstart_args(tiny_model_dir, samples_file, out, "--template", str(template)))
    assert result.exit_code == 2
    assert "placeholder" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_truth_needs_a_boundary(tiny_model_dir, tmp_path):
    record = {**sample(0), "boundaries": []}
    samples = write_samples(tmp_path / "s.jsonl", [record, sample(1)])
    out = tmp_path / "run"
    result = runner.invoke(app, coldstart_args(tiny_model_dir, samples, out, "--coldstart-answer", "truth"))
    assert result.exit_code == 2
    assert "s.jsonl:1:" in result.output and len(result.output.strip().splitlines()) == 1
