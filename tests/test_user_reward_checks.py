"""A reward function of the user's that misbehaves while `rpt train` runs: NaN or infinite rewards,
strings, a scalar, the wrong count, an exception or `sys.exit(0)` stop the run in one line naming the
function, exit status 1 (it failed while running), and no final model. Real `rpt train` on the tiny
random Llama."""

from __future__ import annotations

import sys

import pytest

from rpt_cli.errors import RuntimeFailure
from tests.test_train import invoke, sample, tiny_args, write_samples

BAD_REWARDS = """
import sys

def nan(completions, **columns):
    return [float("nan")] * len(completions)

def inf(completions, **columns):
    return [1.0] * (len(completions) - 1) + [float("inf")]

def strings(completions, **columns):
    return ["1.0"] * len(completions)

def scalar(completions, **columns):
    return 1.0

def exits(completions, **columns):
    sys.exit(0)

def raises(completions, **columns):
    raise KeyError("target")

async def async_nan(completions, **columns):
    return [float("nan")] * len(completions)
"""


MESSAGES = {
    "nan": "reward 1 of 4 is nan; rewards must be finite numbers",
    "inf": "reward 4 of 4 is inf; rewards must be finite numbers",
    "strings": "reward 1 of 4 is a str ('1.0'); rewards are numbers (or None: not scored)",
    "scalar": "returned a float; a reward function returns a list of 4 numbers, one per completion",
    "exits": "the function called sys.exit(0) while scoring; a reward function returns its rewards",
    "raises": "the function raised KeyError: 'target'",
    "async_nan": "reward 1 of 4 is nan; rewards must be finite numbers",
}


@pytest.fixture
def bad_rewards(tmp_path, monkeypatch):
    (tmp_path / "bad_rewards_for_test.py").write_text(BAD_REWARDS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield "bad_rewards_for_test"
    sys.modules.pop("bad_rewards_for_test", None)


@pytest.mark.parametrize("name", ["nan", "exits"])  # exit 0 with reward nan / no final model before
def test_a_misbehaving_user_reward_stops_the_run_in_one_line(tiny_model_dir, tmp_path, bad_rewards, name):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(2)])
    out = tmp_path / "run"
    path = f"{bad_rewards}:{name}"
    result = invoke(tiny_args(tiny_model_dir, samples, out, "--reward", path, "--max-steps", "1"))
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: --reward {path}: {MESSAGES[name]}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "final").exists()


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_the_wrapper_words_each_misbehaviour_in_one_line(bad_rewards, name):
    """As TRL calls it: keyword arguments, 4 completions (async functions awaited)."""
    import asyncio

    from rpt_cli.reward.user import user_reward

    reward = user_reward(f"{bad_rewards}:{name}")
    with pytest.raises(RuntimeFailure) as caught:
        call = reward(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=[[1]] * 4, target=["t"] * 4)
        if asyncio.iscoroutine(call):
            asyncio.run(call)
    assert str(caught.value).startswith(f"--reward {bad_rewards}:{name}: {MESSAGES[name]}")
    assert "\n" not in str(caught.value)


def test_checked_rewards_takes_lists_tuples_arrays_and_none():
    import numpy as np

    from rpt_cli.reward.user import checked_rewards

    assert checked_rewards("m:f", [1, 0.5, None], 3) == [1, 0.5, None]
    assert checked_rewards("m:f", (1.0, 2.0), 2) == [1.0, 2.0]
    assert checked_rewards("m:f", np.array([0.25, 1.0]), 2) == [0.25, 1.0]
    with pytest.raises(RuntimeFailure, match=r"returned 1 rewards for 2 completions"):
        checked_rewards("m:f", [1.0], 2)
    with pytest.raises(RuntimeFailure, match=r"reward 2 of 2 is a bool"):
        checked_rewards("m:f", [1.0, True], 2)
    with pytest.raises(RuntimeFailure, match=r"returned a dict"):
        checked_rewards("m:f", {"a": 1.0, "b": 2.0}, 2)
    with pytest.raises(RuntimeFailure, match=r"reward 1 of 1 is -inf"):
        checked_rewards("m:f", [float("-inf")], 1)
