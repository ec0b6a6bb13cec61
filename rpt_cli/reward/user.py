"""Reward functions of the user's own, named by dotted path (`--reward mypkg.rewards:score` or
`mypkg.rewards.score`, TRL's convention), for `rpt train`.

Such a function is called as TRL calls every reward function: `fn(prompts=..., completions=...,
completion_ids=..., trainer_state=..., **columns)`, one list entry per completion, the columns
being every field of the training rows (`id`, `context`, `target`, `boundaries`); it returns one
float per completion (None: not scored). It is imported when the settings are checked, so a bad
path stops `rpt train` before any model loads. What it returns is checked at every call: anything
but one finite number (or None) per completion, an exception, or a `SystemExit` stops the run in
one line naming the function (a RuntimeFailure, exit status 1: the function misbehaved while
running), so that a NaN reward never trains silently and no `sys.exit()` passes for success.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
import os
import sys
import traceback
from collections.abc import Callable, Mapping

from rpt_cli.errors import RuntimeFailure, UsageError


def is_user_reward(name: str) -> bool:
    """A dotted path (`module:function` or `module.function`) rather than a registry name."""
    from rpt_cli.reward.functions import REWARD_FUNCTIONS

    return name not in REWARD_FUNCTIONS and (":" in name or "." in name)


def split_path(path: str, option: str = "--reward") -> tuple[str, str]:
    """(module, function) of `module.sub:function` or `module.sub.function`."""
    module, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module or not attribute or ":" in attribute:
        raise UsageError(f"{option} {path}: expected a function as module:function or module.function")
    return module, attribute


def import_reward(path: str, option: str = "--reward") -> Callable:
    """The function a dotted path names, importable from the working directory or PYTHONPATH;
    a one-line UsageError when it is not there, not callable, or its module fails to import."""
    module_name, attribute = split_path(path, option)
    # `rpt` run as a console script does not put the working directory on sys.path, as
    # `python -m` does; TRL's scripts add it too. Last, so it shadows no installed package.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"{option} {path}: cannot import module {module_name!r} ({exc}); it must be importable from "
            "the working directory or PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: say so in one line
        raise UsageError(f"{option} {path}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise UsageError(f"{option} {path}: module {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise UsageError(f"{option} {path}: {attribute!r} is not callable (a {type(function).__name__})")
    return function


def checked_rewards(path: str, rewards, expected: int) -> list:
    """The user's rewards as a list, or a RuntimeFailure naming the function: one finite number
    (or None, not scored) per completion, as TRL expects them."""
    where = f"--reward {path}"
    if isinstance(rewards, str | bytes | Mapping) or not hasattr(rewards, "__iter__"):
        raise RuntimeFailure(
            f"{where}: returned a {type(rewards).__name__}; a reward function returns a list of "
            f"{expected} numbers, one per completion"
        )
    rewards = list(rewards)
    if len(rewards) != expected:
        raise RuntimeFailure(f"{where}: returned {len(rewards)} rewards for {expected} completions (one each)")
    for index, reward in enumerate(rewards):
        if reward is None:
            continue
        if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
            raise RuntimeFailure(
                f"{where}: reward {index + 1} of {expected} is a {type(reward).__name__} ({reward!r:.40}); "
                "rewards are numbers (or None: not scored)"
            )
        if not math.isfinite(reward):
            raise RuntimeFailure(
                f"{where}: reward {index + 1} of {expected} is {float(reward)}; rewards must be finite numbers"
            )
    return rewards


def _failed(path: str, exc: BaseException) -> RuntimeFailure:
    """The one line for an exception the user's function raised (its traceback with RPT_DEBUG=1)."""
    if os.environ.get("RPT_DEBUG"):
        traceback.print_exception(exc)
    if isinstance(exc, SystemExit):
        return RuntimeFailure(
            f"--reward {path}: the function called sys.exit({exc.code!r}) while scoring; a reward function "
            "returns its rewards, it does not end the run"
        )
    return RuntimeFailure(f"--reward {path}: the function raised {type(exc).__name__}: {exc}")


def user_reward(path: str, *, extract: Callable | None = None) -> Callable:
    """The user's function as `rpt train` hands it to TRL: called as is (async ones stay async),
    its rewards checked (`checked_rewards`), named after it in TRL's logs, and carrying `extract`,
    the answer format's own reading of a completion, which `rpt train` uses for its
    `no_prediction_share` metric. KeyboardInterrupt passes through: Ctrl-C is the user's, not
    the function's."""
    function = import_reward(path)
    if inspect.iscoroutinefunction(function):

        async def reward(*args, **kwargs):
            try:
                rewards = await function(*args, **kwargs)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: one line naming it
                raise _failed(path, exc) from None
            return checked_rewards(path, rewards, len(kwargs.get("completions", ())))
    else:

        def reward(*args, **kwargs):
            try:
                rewards = function(*args, **kwargs)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: one line naming it
                raise _failed(path, exc) from None
            return checked_rewards(path, rewards, len(kwargs.get("completions", ())))

    functools.update_wrapper(reward, function)
    reward.__name__ = getattr(function, "__name__", split_path(path)[1])
    reward.extract = extract
    return reward


__all__ = ["checked_rewards", "import_reward", "is_user_reward", "split_path", "user_reward"]
