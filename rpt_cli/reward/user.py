"""Reward functions of the user's own, named by dotted path (`--reward mypkg.rewards:score` or
`mypkg.rewards.score`, TRL's convention), for `rpt train`.

Such a function is called as TRL calls every reward function: `fn(prompts=..., completions=...,
completion_ids=..., trainer_state=..., **columns)`, one list entry per completion, the columns
being every field of the training rows (`id`, `context`, `target`, `boundaries`); it returns one
float per completion (None: not scored). It is imported when the settings are checked, so a bad
path stops `rpt train` before any model loads.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable

from rpt_cli.errors import UsageError


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


def user_reward(path: str, *, extract: Callable | None = None) -> Callable:
    """The user's function as `rpt train` hands it to TRL: called as is (async ones stay async),
    named after it in TRL's logs, and carrying `extract`, the answer format's own reading of a
    completion, which `rpt train` uses for its `no_prediction_share` metric."""
    function = import_reward(path)
    if inspect.iscoroutinefunction(function):

        async def reward(*args, **kwargs):
            return await function(*args, **kwargs)
    else:

        def reward(*args, **kwargs):
            return function(*args, **kwargs)

    functools.update_wrapper(reward, function)
    reward.__name__ = getattr(function, "__name__", split_path(path)[1])
    reward.extract = extract
    return reward


__all__ = ["import_reward", "is_user_reward", "split_path", "user_reward"]
