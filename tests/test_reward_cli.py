"""`rpt reward` through Typer's CliRunner: stdout JSONL, stderr summary, exact errors, exit codes."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app


def answer(box: str) -> str:
    return f"<think>Maybe a digit.</think> \\boxed{{{box}}}"


ROLLOUT = {
    "id": "omni-17@42",
    "context": "so $x =",
    "target": " 3$. Hence",
    "boundaries": [2, 4, 5, 10],
    "split": "hard",
    "my_field": [1, "two"],
    "completions": [
        answer(" 3"),
        answer(" 3$."),
        answer("3"),
        "<think>no box</think>",
        answer(" 3$. Hence"),
        answer(" 3$"),
        "\\boxed{ 3}",
        answer(" 4"),
    ],
}


def jsonl(*records) -> str:
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def run(args, input=None):
    return CliRunner().invoke(app, ["reward", *args], input=input)


def write(tmp_path, text, name="rollouts.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_scores_a_file(tmp_path):
    path = write(tmp_path, jsonl(ROLLOUT, {**ROLLOUT, "id": "b", "completions": [answer(" 5")] * 8}))
    result = run([str(path)])
    assert result.exit_code == 0, result.output
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == 2
    first = out[0]
    assert first["predictions"] == [" 3", " 3$.", "3", None, " 3$. Hence", " 3$", None, " 4"]
    assert first["rewards"] == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert first["reward_fn"] == "prefix"
    for key, value in ROLLOUT.items():  # every input field passes through unchanged
        assert first[key] == value
    assert out[1]["rewards"] == [0.0] * 8
    # 16 completions, 3 correct, 2 without prediction, 1 of 2 groups solved, 1 group all equal
    summary, seconds = result.stderr.strip().rsplit(", in ", 1)
    assert summary == (
        "reward (prefix, boxed answers): 2 records, 16 completions: mean reward 0.1875, no prediction 12.5%, "
        "pass@8 50.0%, accuracy 18.8%, 1 groups with all rewards equal"
    )
    assert seconds.endswith(" s")


def test_reads_stdin_and_no_think():
    result = run(["--no-think"], input=jsonl(ROLLOUT))
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert record["predictions"][6] == " 3" and record["rewards"][6] == 1.0
    assert record["reward_options"] == {"require_think": False}


def test_output_file(tmp_path):
    path = write(tmp_path, jsonl(ROLLOUT))
    out = tmp_path / "scored.jsonl"
    result = run([str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert orjson.loads(out.read_bytes())["rewards"][0] == 1.0


@pytest.mark.parametrize(
    "record, reason",
    [
        ({**ROLLOUT, "boundaries": [2, 4, 4]}, '"boundaries" must be strictly increasing, got 4 then 4'),
        ({**ROLLOUT, "boundaries": [4, 2]}, '"boundaries" must be strictly increasing, got 4 then 2'),
        ({**ROLLOUT, "boundaries": [2, 11]}, "boundary 11 exceeds the target, which is 10 UTF-8 bytes long"),
        ({**ROLLOUT, "boundaries": [0, 2]}, '"boundaries" must be positive byte lengths, got 0'),
        (
            {**ROLLOUT, "boundaries": []},
            'field "boundaries" must not be empty (it lists the byte length of the next token first)',
        ),
        (
            {**ROLLOUT, "target": "日本", "boundaries": [3, 7]},
            "boundary 7 exceeds the target, which is 6 UTF-8 bytes long",
        ),
        (
            {k: v for k, v in ROLLOUT.items() if k != "completions"},
            'missing field "completions" (is this the output of rpt rollout?)',
        ),
        (
            {k: v for k, v in ROLLOUT.items() if k != "target"},
            'missing field "target" (is this a rollout of rpt rollout?)',
        ),
        ({**ROLLOUT, "completions": "one"}, 'field "completions" must be a list of strings'),
        ({**ROLLOUT, "completions": []}, 'field "completions" must not be empty'),
        (
            {**ROLLOUT, "completions": ["a", None]},
            '"completions[1]" must be a string (or a list of chat messages), got NoneType',
        ),
        ({**ROLLOUT, "target": 3}, 'field "target" must be a string'),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, record, reason):
    path = write(tmp_path, jsonl(ROLLOUT) + "\n" + jsonl(record))  # line 2 is blank
    out = tmp_path / "scored.jsonl"
    result = run([str(path), "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}:3: {reason}\n"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["rollouts.jsonl"]  # no temporary file left


def test_target_ending_mid_character_is_bad_input(tmp_path):
    # half of a surrogate pair: the JSON text ends in the middle of a character
    path = write(tmp_path, '{"completions": ["x"], "target": " \\ud83d", "boundaries": [1]}\n')
    result = run([str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:1: invalid JSON")


def test_stdin_errors_say_stdin():
    result = run([], input=jsonl(ROLLOUT, {**ROLLOUT, "boundaries": [3, 2]}))
    assert result.exit_code == 2
    assert result.stderr == 'error: <stdin>:2: "boundaries" must be strictly increasing, got 3 then 2\n'


def test_skip_bad(tmp_path):
    path = write(tmp_path, jsonl(ROLLOUT, {**ROLLOUT, "boundaries": [99]}, ROLLOUT))
    result = run([str(path), "--skip-bad"])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2
    assert f"skipped 1 bad record(s); first: {path}:2: boundary 99 exceeds the target" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reward", "exact"], "error: --reward exact: choose one of prefix, first-token, dense, conditional-dense\n"),
        (
            ["--reward", "first-token"],
            "error: --reward first-token needs --model (the policy whose tokenizer it uses), "
            "e.g. --model smollm2-135m\n",
        ),
        (
            ["--reward", "dense"],
            "error: --reward dense needs --model (the policy whose tokenizer and probabilities it uses), "
            "e.g. --model smollm2-135m\n",
        ),
        (["--correct", "maybe"], "error: --correct maybe: choose one of first-token, prefix\n"),
        (["--contexts-per-pass", "0"], "error: --contexts-per-pass must be at least 1\n"),
        (["--answer", "free"], "error: --answer free: choose boxed or direct\n"),
    ],
)
def test_usage_errors(args, message):
    result = run(args, input=jsonl(ROLLOUT))
    assert result.exit_code == 2
    assert result.stderr == message


def test_missing_file(tmp_path):
    result = run([str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.jsonl'}: no such file\n"


def test_first_token_with_a_model(tmp_path, tiny_model_dir):
    record = {**ROLLOUT, "completions": [answer(" 3"), answer(" 3 and more"), answer(" 4")]}
    result = run(["--reward", "first-token", "--model", str(tiny_model_dir)], input=jsonl(record))
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert out["rewards"] == [1.0, 1.0, 0.0]  # " 3" is one token of the tiny tokenizer
    assert out["reward_fn"] == "first-token"
    assert out["reward_options"] == {"model": tiny_model_dir.name}


def test_dense_and_conditional_dense_with_a_model(tmp_path, tiny_model_dir):
    unsolved = {**ROLLOUT, "completions": [answer(" 4"), answer(" 5")]}
    solved = {**ROLLOUT, "completions": [answer(" 3"), answer(" 4")]}
    path = write(tmp_path, jsonl(unsolved, solved))
    dense = run([str(path), "--reward", "dense", "--model", str(tiny_model_dir), "--device", "cpu"])
    assert dense.exit_code == 0, dense.output
    d_unsolved, d_solved = (orjson.loads(line) for line in dense.stdout.splitlines())
    assert all(0.0 < r < 1.0 for r in d_unsolved["rewards"])
    assert d_solved["rewards"][0] == 1.0 and d_solved["rewards"][1] == d_unsolved["rewards"][0]

    conditional = run(
        [str(path), "--reward", "conditional-dense", "--model", str(tiny_model_dir), "--unsolved-reward", "-0.5"]
    )
    assert conditional.exit_code == 0, conditional.output
    c_unsolved, c_solved = (orjson.loads(line) for line in conditional.stdout.splitlines())
    assert c_unsolved["rewards"] == [-0.5, -0.5]
    assert c_solved["rewards"] == d_solved["rewards"]
    assert c_solved["reward_options"] == {
        "correct": "first-token",
        "unsolved_reward": -0.5,
        "model": tiny_model_dir.name,
    }


def test_dense_needs_context(tmp_path, tiny_model_dir):
    record = {k: v for k, v in ROLLOUT.items() if k != "context"}
    path = write(tmp_path, jsonl(ROLLOUT, record))
    result = run([str(path), "--reward", "dense", "--model", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert result.stderr == f'error: {path}:2: missing field "context" (the dense rewards need it)\n'


def test_help_shows_an_example():
    result = CliRunner().invoke(app, ["reward", "--help"])
    assert result.exit_code == 0
    assert "rpt reward" in result.stdout and "--reward" in result.stdout and "--no-think" in result.stdout


# -- the direct answer format ---------------------------------------------------------------------------
DIRECT = {
    "id": "d1",
    "context": "so $x =",
    "target": " 3$. Hence",
    "boundaries": [2, 4, 5, 10],
    "completions": [" 3", " 3$", " 3$.", "3", "", " 3$. Hence", "\\boxed{ 3}", " 3 "],
    "rollout": {"answer": "direct", "template": "direct"},
}


def test_direct_rollouts_are_scored_as_they_were_made(tmp_path):
    """The completion, as it stands, is the prediction: nothing stripped, no box looked for; an
    empty completion has none. The format comes from the rollouts' own metadata."""
    result = run([], input=jsonl(DIRECT))
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert record["predictions"] == [" 3", " 3$", " 3$.", "3", None, " 3$. Hence", "\\boxed{ 3}", " 3 "]
    assert record["rewards"] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert record["reward_options"] == {"answer": "direct"}
    assert result.stderr.startswith("reward (prefix, direct answers): 1 records, 8 completions: mean reward 0.3750")
    # rollouts that do not say how they were made: --answer says it
    bare = {k: v for k, v in DIRECT.items() if k != "rollout"}
    assert orjson.loads(run(["--answer", "direct"], input=jsonl(bare)).stdout)["rewards"] == record["rewards"]
    assert orjson.loads(run([], input=jsonl(bare)).stdout)["rewards"] == [0.0] * 8  # boxed: no box after </think>


@pytest.mark.parametrize(
    "records, args, line, message",
    [
        (
            [DIRECT],
            ["--answer", "boxed"],
            1,
            "this rollout was made in the direct answer format but is scored in the boxed "
            "format (--answer boxed); drop --answer to score each rollout in the format it "
            "was made in",
        ),
        (
            [{**ROLLOUT, "rollout": {"answer": "boxed"}}],
            ["--answer", "direct"],
            1,
            "this rollout was made in the boxed answer format but is scored in the direct format "
            "(--answer direct); drop "
            "--answer to score each rollout in the format it was made in",
        ),
        (
            [DIRECT, {**ROLLOUT, "rollout": {"answer": "boxed"}}],
            [],
            2,
            "this rollout was made in the boxed answer format but is scored in the direct format "
            "(the format of the rollouts "
            "before it); score the two formats separately",
        ),
        ([{**DIRECT, "rollout": {"answer": "free"}}], [], 1, "\"rollout.answer\" is 'free': expected boxed or direct"),
    ],
)
def test_rollouts_scored_in_the_other_format_stop_with_one_line(tmp_path, records, args, line, message):
    path = write(tmp_path, jsonl(*records))
    out = tmp_path / "scored.jsonl"
    result = run([str(path), "-o", str(out), *args])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}:{line}: {message}\n"
    assert not out.exists()
