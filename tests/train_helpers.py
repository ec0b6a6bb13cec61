"""Reward functions whose outcomes the training tests control, registered in the one reward
registry `rpt train` reads (they stand in for the reward only where the reward is not what a test
proves), and a command line that registers them first so tests can run `rpt train` in a
subprocess:

    python tests/train_helpers.py train samples.jsonl --reward test-hash -o runs/x ...
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import time
from pathlib import Path

from rpt_cli.reward import REWARD_FUNCTIONS, PrefixReward


def _groups(ids: list) -> list[int]:
    """Position of each completion within its group (consecutive completions of one sample)."""
    out, previous, position = [], object(), 0
    for value in ids:
        position = position + 1 if value == previous else 0
        previous = value
        out.append(position)
    return out


class HashReward(PrefixReward):
    """0 or 1 from a hash of the completion text: varied within groups, reproducible across runs.
    Sleeps RPT_TEST_REWARD_SLEEP seconds per call, so a test can stop a run between steps."""

    name = "test-hash"

    def __call__(self, completions, **columns):
        time.sleep(float(os.environ.get("RPT_TEST_REWARD_SLEEP", "0")))
        return [float(hashlib.sha256(str(c).encode()).digest()[0] & 1) for c in completions]


class ControlledReward(PrefixReward):
    """Samples whose id starts with "flat" get 0 for every completion (a group without signal);
    the others get 1 for the first completion of their group and 0 for the rest."""

    name = "test-controlled"

    def __call__(self, completions, **columns):
        ids = columns["id"]
        return [0.0 if str(i).startswith("flat") else float(position == 0) for i, position in zip(ids, _groups(ids))]


class RecordingReward(PrefixReward):
    """The real prefix reward (Eq. 3), recording what TRL passed to it and what it returned."""

    name = "test-recording"
    calls: list[dict] = []

    def __call__(self, completions, **columns):
        rewards = super().__call__(completions, **columns)
        RecordingReward.calls.append(
            {
                **{k: list(v) for k, v in columns.items() if isinstance(v, list)},
                "completions": list(completions),
                "rewards": rewards,
                "step": columns["trainer_state"].global_step,
            }
        )
        return rewards


TEST_REWARDS = (HashReward, ControlledReward, RecordingReward)


def register() -> None:
    for cls in TEST_REWARDS:
        REWARD_FUNCTIONS[cls.name] = cls


OPEN_GROUP_AT_EXIT = "train_helpers: the process group is still open at exit"


def _report_open_process_group() -> None:
    """Say so when `rpt train` left its process group for interpreter exit to tear down (where
    it may abort a process after a run that succeeded; see `end_processes`)."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group (importing torch at exit fails)
    if dist is not None and dist.is_available() and dist.is_initialized():
        print(OPEN_GROUP_AT_EXIT, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    register()
    atexit.register(_report_open_process_group)
    from rpt_cli.cli import main

    sys.argv = ["rpt", *sys.argv[1:]]
    main()
