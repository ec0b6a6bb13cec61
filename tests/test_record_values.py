"""Field values checked against docs/records.md (rpt_cli/records.py), not only field types: a
split outside easy/medium/hard/none, an entropy below 0 or beyond any vocabulary's, a
`rollout.answer` that names no format are refused with FILE:LINE, exit status 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.errors import InputError
from rpt_cli.jsonl import read_records
from rpt_cli.records import evaluation_sample, scored_document

runner = CliRunner()

SAMPLE = {"id": "d@1", "context": "a b", "target": " c d", "boundaries": [2, 4], "entropy": 1.2, "split": "easy"}


def write(tmp_path, *records) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"entropy": -0.7}, 'field "entropy" must be a number of nats from 0 to 44.4, got -0.7'),
        ({"entropy": 1e300}, 'field "entropy" must be a number of nats from 0 to 44.4, got 1e+300'),
        ({"split": "hardest"}, "field \"split\" is 'hardest': expected one of easy, medium, hard or none"),
        (
            {"entropy": None, "split": "Hard"},
            'missing field "entropy" (the splits are by entropy; is this the output of rpt filter?)',
        ),
    ],
)
def test_an_evaluation_sample_with_a_value_outside_records_md_is_refused(tmp_path, change, message):
    path = write(tmp_path, SAMPLE, {**SAMPLE, **change})
    with pytest.raises(InputError) as caught:
        list(read_records(path, evaluation_sample))
    assert str(caught.value) == f"{path}:2: {message}"


def test_the_bounds_of_an_entropy_are_values_it_can_take(tmp_path):
    edge = [{**SAMPLE, "entropy": e} for e in (0, 0.0, 44.3, 12)]
    assert len(list(read_records(write(tmp_path, *edge), evaluation_sample))) == 4


def test_a_scored_document_with_an_impossible_entropy_is_refused_by_rpt_filter(tmp_path):
    good = {"id": 1, "text": "ab", "offsets": [0, 1, 2], "entropy": [None, 0.5]}
    path = write(tmp_path, good, {**good, "entropy": [None, 1e300]})
    result = runner.invoke(app, ["filter", path, "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2, result.output
    assert result.stderr == f'error: {path}:2: "entropy" must hold numbers of nats from 0 to 44.4, or null\n'
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(InputError, match=":1: "):
        list(read_records(write(tmp_path, {**good, "entropy": [None, -0.1]}), scored_document()))


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"answer": 5}, '"rollout.answer" is 5: expected boxed or direct'),
        ({"answer": "Boxed"}, "\"rollout.answer\" is 'Boxed': expected boxed or direct"),
        ("v0", 'field "rollout" must be an object, got str'),
    ],
)
def test_rpt_reward_refuses_a_rollout_whose_settings_name_no_format(tmp_path, meta, message):
    rollout = {**SAMPLE, "completions": ["<think>x</think> \\boxed{ c}"], "rollout": {"answer": "boxed"}}
    path = write(tmp_path, rollout, {**rollout, "rollout": meta})
    result = runner.invoke(app, ["reward", path, "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {path}:2: {message}\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_rpt_patterns_refuses_a_split_that_is_not_one(tmp_path):
    path = write(tmp_path, {"completions": ["maybe"], "split": "hard"}, {"completions": ["x"], "split": "hardest"})
    result = runner.invoke(app, ["patterns", path])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {path}:2: field \"split\" is 'hardest': expected one of easy, medium, hard or none\n"
    )
