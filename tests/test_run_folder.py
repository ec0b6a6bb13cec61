"""The run folder of `rpt train`: one writer at a time (a lock the kernel releases, so kill -9
leaves none behind), config.yaml verified against run.json and written with absolute paths, a run
that crashed before its first step in nobody's way, and only complete checkpoints evaluated.
Each refusal is one line, exit status 2, and leaves no folder behind where there was none."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.test_train import helper_run, invoke, read_jsonl, sample, tiny_args, write_samples
from tests.test_train import test_rewards as test_rewards  # noqa: F401 - the fixture


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def busy(out: Path, pid: int) -> str:
    return (
        f"error: -o {out}: another rpt train (pid {pid}) is writing to this run folder; "
        "wait for it to end, or choose another folder"
    )


# --------------------------------------------------------------------------------------------
# One writer per run folder
# --------------------------------------------------------------------------------------------


def test_a_held_folder_is_refused_naming_the_holder_and_a_failed_start_leaves_nothing(tmp_path):
    from rpt_cli.training.lock import LOCK_FILE, run_folder_lock

    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    out = tmp_path / "run"
    args = ["train", str(samples), "-o", str(out), "--model", str(tmp_path / "no-model")]
    with run_folder_lock(out, "-o test"):  # another writer (its own open file: flock tells them apart)
        for extra in ([], ["--resume"]):
            assert one_line_error(invoke([*args, *extra])) == busy(out, os.getpid())
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    # free again: the run starts, then fails on its model before writing anything, and leaves
    # the folder as it found it (a folder holding only the lock file is as good as empty)
    assert "no-model not found" in one_line_error(invoke(args))
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    fresh = tmp_path / "fresh"
    assert "no-model not found" in one_line_error(invoke(["train", str(samples), "-o", str(fresh), *args[4:]]))
    assert not fresh.exists()
    foreign = tmp_path / "foreign"  # someone else's folder: refused, and left without a lock file
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert "holds no rpt train run" in one_line_error(invoke(["train", str(samples), "-o", str(foreign), *args[4:]]))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_two_racing_runs_leave_one_run_and_a_killed_holder_no_stale_lock(tiny_model_dir, tmp_path, test_rewards):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(4)])
    out = tmp_path / "run"
    common = ["--reward", "test-hash", "--max-steps", "4", "--save-steps", "2"]
    settings = {"a": ["--seed", "1", "--learning-rate", "1e-3"], "b": ["--seed", "2", "--learning-rate", "5e-3"]}
    slow = {"RPT_TEST_REWARD_SLEEP": "0.5"}  # steps long enough to act between them
    runs = {
        name: helper_run(tiny_args(tiny_model_dir, samples, out, *common, *extra), slow)
        for name, extra in settings.items()
    }
    deadline = time.time() + 300
    while all(proc.poll() is None for proc in runs.values()):
        assert time.time() < deadline, "neither run ended"
        time.sleep(0.05)
    loser = next(name for name, proc in runs.items() if proc.poll() is not None)
    winner = "b" if loser == "a" else "a"
    assert runs[loser].wait() == 2
    assert runs[loser].stderr.read().decode().strip() == busy(out, runs[winner].pid)
    # a --resume while the winner trains is refused in the same words
    while not read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else True:
        assert runs[winner].poll() is None, runs[winner].communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "no step within five minutes"
        time.sleep(0.05)
    resume = tiny_args(tiny_model_dir, samples, out, *common, *settings[winner], "--resume")
    assert one_line_error(invoke(resume)) == busy(out, runs[winner].pid)
    # kill -9 the winner once its first checkpoint is complete: the kernel drops its lock
    from rpt_cli.training.checkpoints import completed_step

    while completed_step(out / "checkpoint-2") is None:
        assert runs[winner].poll() is None, runs[winner].communicate()[1].decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within five minutes"
        time.sleep(0.05)
    runs[winner].send_signal(signal.SIGKILL)
    runs[winner].wait()
    assert not (out / "final").exists(), "the run ended before it could be killed"
    resumed = invoke(resume)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from checkpoint-" in resumed.stderr
    for name in ("metrics.jsonl", "batches.jsonl"):  # every step once: one writer at a time
        assert [r["step"] for r in read_jsonl(out / name)] == [1, 2, 3, 4]
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    expected = dict(zip(settings[winner][::2], settings[winner][1::2]))
    assert (recorded["seed"], recorded["learning_rate"]) == (
        int(expected["--seed"]),
        float(expected["--learning-rate"]),
    )


# --------------------------------------------------------------------------------------------
# A run that ended before its first step
# --------------------------------------------------------------------------------------------


def test_a_run_that_never_made_a_step_does_not_block_a_new_one(tmp_path):
    from rpt_cli.training.config import TrainConfig
    from rpt_cli.training.data import read_samples
    from rpt_cli.training.folder import plan_output

    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    out = tmp_path / "run"
    out.mkdir()
    # what a crash at step 1 leaves (an empty-context sample did, before it was refused)
    for name, text in (("config.yaml", "max_steps: 3\n"), ("run.json", "{}"), ("documents.json", "{}")):
        (out / name).write_text(text)
    (out / "metrics.jsonl").write_bytes(b'{"step": 1, "loss"')  # a torn line is no step
    config = TrainConfig(samples=str(samples), output=str(out), learning_rate=1e-3)
    for resume in (False, True):
        plan = plan_output(config, read_samples(str(samples)), resume=resume)
        assert plan.restarted and not plan.resuming
    (out / "metrics.jsonl").write_bytes(b'{"step": 1}\n')  # a step made: the run is worth keeping
    result = invoke(["train", str(samples), "-o", str(out), "--model", str(tmp_path / "no-model")])
    assert "holds another run" in one_line_error(result)


# --------------------------------------------------------------------------------------------
# Checks that need the model's tokenizer or configuration, before the folder is written
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_bad", [False, True])
def test_an_empty_prompt_is_refused_before_the_folder_is_written(tiny_model_dir, tmp_path, skip_bad):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0), {**sample(1), "context": ""}])
    out = tmp_path / "run"
    extra = ["--answer", "direct", *(["--skip-bad"] if skip_bad else [])]
    result = invoke(tiny_args(tiny_model_dir, samples, out, "--max-steps", "1", *extra))
    if skip_bad:  # skipped and counted; the run trains on the other sample
        assert result.exit_code == 0, result.output
        assert "skipped 1 bad record(s)" in result.stderr and f"{samples}:2: the prompt is empty" in result.stderr
        assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
        assert {i for r in read_jsonl(out / "batches.jsonl") for i in r["drawn"]} == {"s0"}
        return
    assert one_line_error(result).startswith(f"error: {samples}:2: the prompt is empty")
    assert not out.exists()
    # the boxed format's template gives an empty context a prompt: nothing to refuse
    from rpt_cli.generation.session import PromptSettings, prompt_builder
    from rpt_cli.models import load_tokenizer
    from rpt_cli.prompts import load_template
    from rpt_cli.training.data import prompt_rows, read_samples

    builder = prompt_builder(
        load_tokenizer(str(tiny_model_dir)), PromptSettings(template=load_template("v0"), answer="boxed")
    )
    assert len(prompt_rows(read_samples(str(samples)), builder)[1]) == 2


def test_max_new_tokens_beyond_the_models_positions_is_refused(tiny_model_dir, tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    out = tmp_path / "run"
    for tokens in ("10000000", "512"):  # the tiny model has 512 positions
        result = invoke([*tiny_args(tiny_model_dir, samples, out), "--max-new-tokens", tokens])
        assert one_line_error(result) == (
            f"error: --max-new-tokens {tokens}: the model has 512 positions, which a prompt of at least one "
            "token and the completion share; use at most 511"
        )
        assert not out.exists()


# --------------------------------------------------------------------------------------------
# config.yaml: verified against run.json, paths that hold from any directory
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # two short training runs of the tiny model
def test_config_yaml_is_verified_and_its_paths_hold_from_anywhere(tiny_model_dir, tmp_path, test_rewards, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    write_samples(work / "samples.jsonl", [sample(i) for i in range(3)])
    (work / "model").symlink_to(tiny_model_dir)
    monkeypatch.chdir(work)  # samples, model and output as relative paths
    first = invoke(
        tiny_args(Path("model"), Path("samples.jsonl"), Path("run"), "--reward", "test-hash", "--max-steps", "1")
    )
    assert first.exit_code == 0, first.output
    run = work / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["samples"], saved["model"], saved["output"]) == (
        str(work / "samples.jsonl"),
        str(work / "model"),
        str(run),
    )
    # an edited config.yaml is refused, with or without --config, in the same words
    original = (run / "config.yaml").read_text()
    assert "learning_rate: 1.0e-06" in original
    (run / "config.yaml").write_text(original.replace("learning_rate: 1.0e-06", "learning_rate: 0.5"))
    edited = (
        f"error: --resume: {run / 'config.yaml'} was changed after the run started (its digest in run.json "
        "differs), so it no longer says how the run was trained; put the file back as it was, or start a new "
        "run in another folder"
    )
    monkeypatch.chdir(elsewhere)
    again = ["train", "--config", str(run / "config.yaml"), "--resume", "--max-steps", "2"]
    assert one_line_error(invoke(again)) == edited
    plain = tiny_args(tiny_model_dir, work / "samples.jsonl", run, "--reward", "test-hash", "--max-steps", "2")
    assert one_line_error(invoke([*plain, "--resume"])) == edited
    # put back: the run's own config.yaml resumes it from another directory, and the model
    # spelled another way (absolute, through no link) is the same model
    (run / "config.yaml").write_text(original)
    resumed = invoke(again)
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    done = invoke([*plain[:-1], "3", "--resume"])
    assert done.exit_code == 0, done.output
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# rpt eval takes complete checkpoints only
# --------------------------------------------------------------------------------------------


def test_eval_refuses_a_checkpoint_without_its_marker(tiny_model_dir, tmp_path):
    import shutil

    from rpt_cli.training.checkpoints import mark_complete

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("max_steps: 4\n")
    for step in (1, 2):
        shutil.copytree(tiny_model_dir, run / f"checkpoint-{step}")
    mark_complete(run / "checkpoint-1", 1)
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(orjson.dumps(sample(0)) + b"\n")
    result = invoke(["eval", str(samples), "-m", str(run / "checkpoint-2")])
    assert one_line_error(result) == (
        f"error: --model {run / 'checkpoint-2'}: not a complete checkpoint (no rpt-complete.json for its step: "
        "its save was interrupted or is still under way); evaluate a complete checkpoint, the final model, or "
        "the run folder"
    )
    assert result.stdout == ""
    mark_complete(run / "checkpoint-2", 1)  # a marker of another step is not this checkpoint's
    assert "not a complete checkpoint" in one_line_error(
        invoke(["eval", str(samples), "-m", str(run / "checkpoint-2")])
    )
    complete = invoke(["eval", str(samples), "-m", str(run / "checkpoint-1")])
    assert complete.exit_code == 0, complete.output
    assert orjson.loads(complete.stdout.splitlines()[0])["step"] == 1
