"""`rpt train --reward module:function`: a reward function of the user's, named by dotted path
(TRL's convention), called as TRL calls reward functions. Real `rpt train` on the tiny random
Llama; the metrics are checked against what the user's function returned."""

from __future__ import annotations

import pytest
import yaml

from rpt_cli.errors import UsageError
from rpt_cli.reward.user import import_reward, is_user_reward, split_path
from tests.test_train import invoke, read_jsonl, sample, tiny_args, write_samples

# varied within groups (completion lengths differ), and recording what TRL passed
USER_REWARD = """
CALLS = []

def score(completions, target, trainer_state, **columns):
    rewards = [float(len(str(c)) % 2) for c in completions]
    CALLS.append({"step": trainer_state.global_step, "id": list(columns["id"]), "target": list(target),
                  "context": list(columns["context"]), "rewards": rewards})
    return rewards
"""


def test_rpt_train_trains_on_a_reward_function_given_by_dotted_path(tiny_model_dir, tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "my_rewards_for_test.py").write_text(USER_REWARD)
    monkeypatch.chdir(tmp_path)  # importable from the working directory, as TRL's scripts find them
    monkeypatch.setattr(sys, "path", list(sys.path))
    records = [sample(i) for i in range(4)]
    samples = write_samples(tmp_path / "samples.jsonl", records)
    out = tmp_path / "run"
    args = tiny_args(tiny_model_dir, samples, out, "--reward", "my_rewards_for_test:score", "--max-steps", "2")
    result = invoke(args)
    assert result.exit_code == 0, result.output

    calls = importlib.import_module("my_rewards_for_test").CALLS
    assert [call["step"] for call in calls] == [0, 1]
    by_id = {r["id"]: r for r in records}
    metrics = read_jsonl(out / "metrics.jsonl")
    for call, m in zip(calls, metrics, strict=True):
        assert len(call["rewards"]) == 4  # 2 contexts x G=2, one entry per completion
        assert all(call["target"][i] == by_id[sid]["target"] for i, sid in enumerate(call["id"]))
        assert all(call["context"][i] == by_id[sid]["context"] for i, sid in enumerate(call["id"]))
        assert m["reward_mean"] == pytest.approx(sum(call["rewards"]) / 4)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["reward"] == "my_rewards_for_test:score"  # and so --resume and rpt eval see it
    sys.modules.pop("my_rewards_for_test", None)


@pytest.mark.parametrize(
    "reward, message",
    [
        ("no_such_module:score", "--reward no_such_module:score: cannot import module 'no_such_module'"),
        ("json:no_such_function", "--reward json:no_such_function: module 'json' has no 'no_such_function'"),
        ("math.pi", "--reward math.pi: 'pi' is not callable (a float)"),
        ("json:", "--reward json:: expected a function as module:function or module.function"),
        ("prefx", "--reward prefx: choose one of prefix"),  # a typo of a registry name stays one
    ],
)
def test_a_bad_reward_path_is_refused_in_one_line(tmp_path, reward, message):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    result = invoke(
        ["train", str(samples), "-o", str(tmp_path / "run"), "--model", "/no/such/model", "--reward", reward]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_dotted_paths_in_both_forms():
    assert split_path("pkg.rewards:score") == ("pkg.rewards", "score")
    assert split_path("pkg.rewards.score") == ("pkg.rewards", "score")
    assert is_user_reward("pkg.score") and is_user_reward("pkg:score")
    assert not is_user_reward("prefix") and not is_user_reward("conditional-dense")
    import os.path

    assert import_reward("os.path.join") is os.path.join is import_reward("os.path:join")
    with pytest.raises(UsageError, match="module 'os' has no 'nope'"):
        import_reward("os:nope")
