"""`rpt train --objective rlp` as RLP defines it: the advantage G/(G-1)·(r − group mean) with no
division by the group's spread, generation that stops at `</think>`, empty thoughts unscored,
RLP's shipped settings, and the settings and evaluations refused.

The stop is tested on a tiny model built to write `</think>` often: its hidden state is the same
at every position, so its next-token distribution is fixed, a quarter of it on the closer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.training.config import check_config, resolve_config
from rpt_cli.training.objectives import THOUGHT_CLOSE
from tests.conftest import ROOT
from tests.test_objectives import load, samples_for
from tests.test_train import write_samples

WORDS = (" the", " x", " is")  # with the closer, the only tokens the closing model writes


@pytest.fixture(scope="module")
def closing_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny tokenizer with `</think>` as one token (as R1-Distill and Qwen3 have it), and a
    model that writes the closer or one of WORDS, each with probability 1/4, whatever came before."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("closing-model")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens([THOUGHT_CLOSE])
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.vocab_size, config.tie_word_embeddings = len(tokenizer), False
    model = LlamaForCausalLM(config)
    hidden = config.hidden_size
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)  # every input the same vector
        for layer in model.model.layers:  # the blocks add nothing to the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)  # so the last hidden state is all ones
        logits = torch.full((len(tokenizer),), -30.0)
        chosen = [tokenizer.convert_tokens_to_ids(THOUGHT_CLOSE)]
        chosen += [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
        logits[chosen] = 0.0
        model.lm_head.weight.copy_(logits.unsqueeze(1).expand(-1, hidden) / hidden)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def rlp_trainer(model_dir: Path, tmp_path: Path, **settings):
    from rich.console import Console

    from rpt_cli.training.run import build

    _, tokenizer = load(model_dir)
    samples = write_samples(tmp_path / "s.jsonl", samples_for(tokenizer))
    config = resolve_config(
        {
            "samples": str(samples),
            "output": str(tmp_path / "run"),
            "model": str(model_dir),
            "objective": "rlp",
            "num_completions": 4,
            "contexts_per_step": 2,
            "max_new_tokens": 40,
            "max_prompt_tokens": 64,
            "gradient_checkpointing": False,
            **settings,
        }
    )
    job = build(config, console=Console(stderr=True, quiet=True))
    job.trainer.model.train()
    return job.trainer, tokenizer


def test_thoughts_stop_at_the_closer_and_advantages_are_rlps(closing_model_dir, tmp_path):
    trainer, tokenizer = rlp_trainer(closing_model_dir, tmp_path)
    closer = tokenizer.convert_tokens_to_ids(THOUGHT_CLOSE)
    G = 4
    inputs = [trainer.train_dataset[i] for i in (0, 1) for _ in range(G)]
    batch = trainer._generate_and_score_completions(inputs)
    rows = [
        [i for i, m in zip(ids, mask) if m]
        for ids, mask in zip(batch["completion_ids"].tolist(), batch["completion_mask"].tolist())
    ]
    # generation stopped at the first closer: at most one per completion, and it ends the completion
    # (without the stop, each would run on to 40 tokens with about 10 closers in it)
    assert all(row.count(closer) <= 1 and (closer not in row or row[-1] == closer) for row in rows)
    assert max(len(row) for row in rows) < 40
    assert sum(closer in row for row in rows) >= 6
    # the advantage: G/(G-1)·(r − mean of the group's scored rewards); an empty thought is unscored
    rewards = torch.tensor([gain for gain, _, _ in trainer.rlp_reward.last], dtype=torch.float64)
    empty = [row[:1] == [closer] for row in rows]
    assert [math.isnan(r) for r in rewards.tolist()] == empty
    assert not all(empty)
    expected = []
    for group in rewards.view(-1, G):
        mean = group[~group.isnan()].mean()
        expected += [0.0 if math.isnan(r) else G / (G - 1) * (r - float(mean)) for r in group.tolist()]
    torch.testing.assert_close(batch["advantages"].double(), torch.tensor(expected, dtype=torch.float64))
    # not scaled to unit spread, as TRL's scale_rewards="group" would have done
    scored = [a for a, e in zip(batch["advantages"].tolist(), empty) if not e]
    assert max(abs(a) for a in scored) != pytest.approx(1.0, abs=0.05)


def test_the_shipped_config_holds_rlps_settings():
    config = resolve_config({"samples": "s.jsonl", "output": "out"}, str(ROOT / "examples" / "configs" / "rlp.yaml"))
    check_config(config)
    got = {
        "objective": config.objective,
        "G": config.num_completions,
        "temperature": config.temperature,
        "thought tokens": config.max_new_tokens,
        "contexts per step": config.contexts_per_step,
        "context tokens": config.max_prompt_tokens,
        "dynamic sampling": config.dynamic_sampling_from_step,
        "scale rewards": config.scale_rewards,
        "ema": config.ema_decay,
    }
    assert got == {
        "objective": "rlp",
        "G": 16,
        "temperature": 0.7,
        "thought tokens": 2048,
        "contexts per step": 512,
        "context tokens": 2048,
        "dynamic sampling": 0,
        "scale rewards": "none",
        "ema": 0.999,
    }


def test_rlp_defaults_are_rlps_advantage_and_no_dynamic_sampling():
    config = resolve_config({"samples": "s.jsonl", "output": "out", "objective": "rlp"})
    assert (config.scale_rewards, config.dynamic_sampling_from_step, config.template) == ("none", 0, "thought")
    rpt = resolve_config({"samples": "s.jsonl", "output": "out"})
    assert rpt.scale_rewards == "group" and rpt.dynamic_sampling_from_step > 0  # the paper's, unchanged


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--answer", "direct"], "--objective rlp --answer direct: rlp scores the true next token after a thought"),
        (["--scale-rewards", "group"], "--objective rlp --scale-rewards group: RLP's advantage is G/(G-1)"),
    ],
)
def test_rlp_refuses_settings_that_are_not_rlp(tiny_model_dir, tmp_path, extra, message):
    samples = write_samples(tmp_path / "s.jsonl", [{"id": "a", "context": "ab", "target": "c", "boundaries": [1]}])
    args = ["train", str(samples), "-o", str(tmp_path / "run"), "--model", str(tiny_model_dir), "--objective", "rlp"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_eval_refuses_boxed_scoring_of_an_rlp_run_unless_asked(tiny_model_dir, tmp_path):
    trainer, tokenizer = rlp_trainer(tiny_model_dir, tmp_path, max_new_tokens=4, num_completions=2)
    run = tmp_path / "run"
    trainer.args.max_steps = 1
    trainer.train()
    trainer.save_model(str(run / "final"))
    samples = write_samples(tmp_path / "val.jsonl", samples_for(tokenizer)[:2])
    base = ["eval", str(samples), "-m", str(run), "-G", "2", "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*base, "--mode", "reasoning"])
    assert result.exit_code == 2
    assert "an --objective rlp run thinks, then continues the text" in result.output
    assert result.output.count("\n") == 1
    # gain mode, and reasoning with a template that asks for a box, run
    for extra in (["--mode", "gain"], ["--mode", "reasoning", "--template", "v0", "--max-prompt-tokens", "400"]):
        result = CliRunner().invoke(app, [*base, *extra, "-o", str(tmp_path / "r.jsonl")])
        assert result.exit_code == 0, result.output
