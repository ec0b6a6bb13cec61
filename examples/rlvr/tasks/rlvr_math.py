"""Scoring of the `rlvr_math` lm-eval task: math_reward.py's verifier (beside this folder), so a
model is tested the way RLVR trained it."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _verifier():
    # lm-eval imports this file by its path, not as part of a package: load math_reward.py the same way
    spec = importlib.util.spec_from_file_location("rlvr_math_reward", Path(__file__).parent.parent / "math_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.verify_answer


verify_answer = _verifier()


def process_results(doc: dict, results: list[str]) -> dict:
    """lm-eval's hook: `results` holds the one generated answer of this question."""
    return {"acc": verify_answer(results[0], str(doc["answer"]))}
