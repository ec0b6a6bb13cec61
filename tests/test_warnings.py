"""No deprecation warning reaches users from the way our code calls transformers and TRL.

`test_the_demo_paths_raise_no_deprecation_from_rpt_code` runs the demo's commands (entropy, filter,
train direct and boxed, curves, rollout on the HF backend, eval ntp and reasoning) on the tiny model
and fails on every DeprecationWarning or FutureWarning raised while rpt_cli code is on the stack
(the release that deprecates a name we call fails it, whatever the name), and on any warning a
user would see. The tests below it check named paths in more detail.

Real paths on the tiny model of conftest.py: HF-backend generation through the shared prefill
(`generate` continues from a `DynamicCache` we pass as `past_key_values`), the same backend handed
a policy in train mode with gradient checkpointing on (as a training loop would), and one
`rpt train` step with gradient checkpointing on (the default; test_train.py runs without it).

transformers reports most deprecations through its logger (`logger.warning_once`), which rpt turns
down to errors only; the check keeps that logger at warning level and clears the once-only memory
of `warning_once`, so such a message is seen here even though a user would not see it today.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
import warnings
from contextlib import contextmanager

import pytest

from tests.test_train import sample, tiny_args, write_samples

WATCHED = re.compile(r"past_key_values|gradient[ _]checkpointing", re.IGNORECASE)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextmanager
def watched_messages(monkeypatch):
    """Yields a list that ends up holding every Python warning (DeprecationWarning, FutureWarning
    and their subclasses) and every transformers log message at warning level or above whose text
    mentions past_key_values or gradient checkpointing, as "Category: message" strings."""
    from transformers.utils import logging as hf_logging

    found: list[str] = []
    handler = _Records()
    root = hf_logging.get_logger("transformers")
    level = root.level
    # This un-silences, it does not silence: rpt's quiet_transformers() lowers transformers' logger
    # to errors (its progress bars and advice), which would also hide a deprecation logged by
    # transformers; the test keeps the logger at warning level so any such message is caught.
    monkeypatch.setattr(hf_logging, "set_verbosity_error", lambda: None)
    hf_logging.warning_once.cache_clear()
    root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        # record every warning ("always": none is deduplicated away) so the test can fail on one
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        found += [
            f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
            for w in caught
            if issubclass(w.category, (DeprecationWarning, FutureWarning)) and WATCHED.search(str(w.message))
        ]
        found += [
            f"{r.name} {r.levelname}: {r.getMessage()}" for r in handler.records if WATCHED.search(r.getMessage())
        ]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


RPT_CODE = f"{os.sep}rpt_cli{os.sep}"


@contextmanager
def warnings_from_rpt_calls():
    """Yields (deprecations, shown): every DeprecationWarning/FutureWarning raised with a frame of
    rpt_cli on the stack (rpt's call led to it; warnings of a module being imported aside), and
    every warning of a category Python shows users by default, as 'Category: message (where)'."""
    deprecations: list[str] = []
    shown: list[str] = []
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)

    def record(message, category, filename, lineno, file=None, line=None):
        stack = traceback.extract_stack()[:-1]
        ours = [i for i, frame in enumerate(stack) if RPT_CODE in frame.filename]
        text = f"{category.__name__}: {message} ({filename}:{lineno})"
        if not issubclass(category, hidden):
            shown.append(text)
        if issubclass(category, (DeprecationWarning, FutureWarning)) and ours:
            below = stack[ours[-1] + 1 :]
            if not any("importlib" in frame.filename for frame in below):
                deprecations.append(f"{text}, called from {stack[ours[-1]].filename}:{stack[ours[-1]].lineno}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # none deduplicated away, none turned off by a library
        warnings.showwarning = record
        yield deprecations, shown


@pytest.mark.slow  # the demo's seven commands, two of them training runs: a minute or more on 2 cores
def test_the_demo_paths_raise_no_deprecation_from_rpt_code(tiny_model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rpt_cli.cli import app

    text = "Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Then $x = 2$ or $x = 3$. Hence the answer is 3."
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": i, "text": f"{i} {text}"}) + "\n" for i in range(4)))
    model = str(tiny_model_dir)
    samples = tmp_path / "samples.jsonl"
    commands = [
        ["entropy", str(docs), "--model", model, "-o", str(tmp_path / "scored.jsonl")],
        ["filter", str(tmp_path / "scored.jsonl"), "--min", "0.5", "--per-doc", "2", "-o", str(samples)],
        # direct, with activation checkpointing on; boxed, with it off (the demo's configs)
        tiny_args(tiny_model_dir, samples, tmp_path / "run", "--answer", "direct", "--max-steps", "2"),
        tiny_args(tiny_model_dir, samples, tmp_path / "boxed", "--max-steps", "1"),
        # the cold start before the boxed run (make demo's first training run)
        tiny_args(tiny_model_dir, samples, tmp_path / "cold", "--objective", "coldstart", "--max-steps", "1")
        + ["--template", "direct", "--no-chat"],
        ["curves", str(tmp_path / "run"), "-o", str(tmp_path / "reward.png")],
        ["rollout", str(samples), "--model", model, "--backend", "hf", "-G", "2", "--max-new-tokens", "4"],
        ["eval", str(samples), "--model", model, "--model", str(tmp_path / "run"), "--mode", "ntp"]
        + ["--mode", "reasoning", "--answer", "direct", "-G", "2", "--backend", "hf", "--max-new-tokens", "4"]
        + ["--details", str(tmp_path / "details.jsonl")],
        ["patterns", str(tmp_path / "details.jsonl"), "-o", str(tmp_path / "patterns.png")],
    ]
    direct = commands[2]
    direct[direct.index("--no-gradient-checkpointing")] = "--gradient-checkpointing"
    with warnings_from_rpt_calls() as (deprecations, shown):
        for args in commands:
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, f"rpt {args[0]}: {result.output}"
            said = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
            assert said == [], f"rpt {args[0]} printed a warning"
    assert sum(1 for _ in samples.open()) >= 4
    assert deprecations == [], "\n".join(deprecations)
    assert shown == [], "\n".join(shown)


@pytest.fixture
def backend_parts(tiny_model_dir):
    from rpt_cli.models import load_model

    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer


def spy_generate(monkeypatch, model) -> list[dict]:
    """Record the keyword arguments of each `model.generate` call (and still generate)."""
    calls: list[dict] = []
    generate = model.generate

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording)
    return calls


def test_hf_generation_through_the_shared_prefill_raises_no_cache_deprecation(backend_parts, monkeypatch):
    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.hf_backend import HFBackend

    model, tokenizer = backend_parts
    calls = spy_generate(monkeypatch, model)
    with watched_messages(monkeypatch) as found:
        backend = HFBackend(model, tokenizer)
        for params in (SamplingConfig(max_new_tokens=6, seed=1), SamplingConfig(max_new_tokens=6, temperature=0.0)):
            groups = backend.generate(["Let $x$ be a real number such that", "Hence the answer is"], 3, params)
            assert [len(g) for g in groups] == [3, 3]
    # the path under test was taken: `generate` continued from our prefilled cache, under the name
    # the installed transformers documents (`cache` from 5.2x, `past_key_values` before)
    from rpt_cli.models import cache_argument

    assert calls and all(cache_argument(model) in c for c in calls) and backend.share_prefill
    assert found == []


def test_hf_generation_with_a_checkpointed_policy_in_train_mode(backend_parts, monkeypatch):
    """A training loop hands in its policy in train mode with gradient checkpointing on."""
    from rpt_cli.generation import SamplingConfig
    from rpt_cli.generation.hf_backend import HFBackend

    model, tokenizer = backend_parts
    with watched_messages(monkeypatch) as found:
        # the names of the installed release (activation_* from transformers 5.2x on)
        new = hasattr(model, "activation_checkpointing_enable")
        (model.activation_checkpointing_enable if new else model.gradient_checkpointing_enable)()
        model.train()
        backend = HFBackend(model, tokenizer)
        groups = backend.generate(["Let $x$ be a real number such that"], 4, SamplingConfig(max_new_tokens=6, seed=2))
        assert [len(g) for g in groups] == [4]
        assert model.training and (model.is_activation_checkpointing if new else model.is_gradient_checkpointing)
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()
    assert found == []


def test_a_train_step_with_gradient_checkpointing_raises_no_deprecation(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel
    from typer.testing import CliRunner

    from rpt_cli.cli import app

    enabled: list[dict] = []
    # the name the installed release turns it on with (activation_* from transformers 5.2x on)
    names = ("activation_checkpointing_enable", "gradient_checkpointing_enable")
    name = next(n for n in names if hasattr(PreTrainedModel, n))
    enable = getattr(PreTrainedModel, name)

    def recording(self, *args, **kwargs):
        enabled.append(kwargs)
        return enable(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, name, recording)
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(2)])
    args = tiny_args(tiny_model_dir, samples, tmp_path / "run", "--max-steps", "1", "--save-steps", "10")
    args[args.index("--no-gradient-checkpointing")] = "--gradient-checkpointing"
    with watched_messages(monkeypatch) as found:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert enabled, "gradient checkpointing was never turned on, so this test proves nothing"
    assert (tmp_path / "run" / "final").is_dir()
    assert found == []
