"""Shared-prompt training passes (rpt_cli/training/shared_prompt.py): per-token log-probabilities,
entropies and gradients equal TRL's unshared pass, on the tiny model and on the built-in one, with
left-padded prompts of different lengths, G in {1, 2, 8}, rows in any order and chunked passes;
and whole `rpt train` steps (gradient accumulation, --objective rpt and rlp) whose gradient is
the same with and without sharing."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from rpt_cli.training.shared_prompt import Packed, group_rows, packable, shared_logps_and_entropies, unsupported_reason
from tests.test_train import sample, write_samples


def patched_model(folder: Path, temperature: float = 0.7):
    """The model as GRPOTrainer holds it: TRL's fused LM head added, in training mode."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy"))
    model.train()
    return model


def unshared(model, input_ids, attention_mask, logits_to_keep, batch_size=None):
    """TRL's own pass (GRPOTrainer._get_per_token_logps_and_entropies), one row per completion."""
    from accelerate import Accelerator
    from trl import GRPOTrainer

    trainer = types.SimpleNamespace(accelerator=Accelerator(cpu=True))
    method = GRPOTrainer._get_per_token_logps_and_entropies.__wrapped__  # without TRL's profiling
    logps, entropies, _ = method(
        trainer, model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=True
    )
    return logps, entropies


def make_batch(vocab: int, prompt_lengths: list[int], G: int, width: int, seed: int = 0):
    """Rows as TRL builds them: each prompt G times, left padded to the longest prompt; completions
    of random lengths (1..width) right padded; rows shuffled."""
    generator = torch.Generator().manual_seed(seed)
    P = max(prompt_lengths)
    ids, mask = [], []
    for length in prompt_lengths:
        prompt = torch.randint(3, vocab, (length,), generator=generator)
        for _ in range(G):
            n = int(torch.randint(1, width + 1, (), generator=generator))
            completion = torch.randint(3, vocab, (n,), generator=generator)
            ids.append(torch.cat([torch.zeros(P - length, dtype=torch.long), prompt, completion]))
            ids[-1] = torch.cat([ids[-1], torch.zeros(width - n, dtype=torch.long)])
            mask.append(torch.tensor([0] * (P - length) + [1] * (length + n) + [0] * (width - n)))
    order = torch.randperm(len(ids), generator=generator)
    return torch.stack(ids)[order], torch.stack(mask)[order]


def gradients(model) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out


def assert_same_pass(model, ids, mask, width, batch_size=None, atol=1e-5):
    completion_mask = mask[:, -width:]
    weights = torch.linspace(-1.0, 1.0, ids.size(0)).unsqueeze(1)  # advantages of both signs
    model.zero_grad()
    expected, expected_entropy = unshared(model, ids, mask, width, batch_size)
    ((expected * weights + 0.1 * expected_entropy) * completion_mask).sum().backward()
    expected_grads = gradients(model)
    got, got_entropy = shared_logps_and_entropies(model, ids, mask, width, batch_size=batch_size, compute_entropy=True)
    ((got * weights + 0.1 * got_entropy) * completion_mask).sum().backward()
    got_grads = gradients(model)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
    torch.testing.assert_close(got_entropy, expected_entropy, atol=atol, rtol=1e-4)
    assert (got[completion_mask == 0] == 0).all()
    assert set(got_grads) == set(expected_grads)
    for name, grad in expected_grads.items():
        scale = grad.abs().max().clamp(min=1e-6)
        assert (got_grads[name] - grad).abs().max() / scale < 1e-4, name
    assert any(grad.abs().sum() > 0 for grad in expected_grads.values())


@pytest.mark.parametrize("G", [1, 2, 8])
def test_shared_pass_equals_the_unshared_pass_on_the_tiny_model(tiny_model_dir, G):
    model = patched_model(tiny_model_dir)
    assert unsupported_reason(model) is None
    ids, mask = make_batch(model.config.vocab_size, [5, 11, 3], G, width=6, seed=G)
    assert_same_pass(model, ids, mask, 6)
    assert_same_pass(model, ids, mask, 6, batch_size=4)  # TRL's chunked passes: groups split across chunks


def test_packed_layout_runs_each_prompt_once(tiny_model_dir):
    ids, mask = make_batch(100, [20, 31, 25], 4, width=3)
    P = ids.size(1) - 3
    assert len(group_rows(ids[:, :P], mask[:, :P])) == 3
    packed = Packed(ids, mask, 3)
    assert packed.input_ids.size(0) == 3
    # the prompt tokens once, then per completion a copy of its prompt's last token and its tokens
    assert packed.tokens == (20 + 31 + 25 - 3) + 12 + int(mask[:, P:].sum())
    assert packed.tokens < int(mask.sum()) / 2
    # positions are the columns of the unshared pass, left padding included: the 20-token prompt
    # sits in the last 20 prompt columns; each of its branches restarts at its last column
    row = ((packed.segments == 0).sum(dim=1) == 19).nonzero().item()
    assert packed.position_ids[row, :2].tolist() == [P - 20, P - 19]
    assert packed.position_ids[row, 19:21].tolist() == [P - 1, P]
    assert (packed.labels[row, :19] == -100).all()


def test_long_completions_after_a_short_prompt_are_not_packed_together():
    # packing 8 branches of 30 tokens after 3 prompt tokens would cost more attention than 8 rows
    ids, mask = make_batch(100, [3], 8, width=30, seed=1)
    mask[:, -30:] = 1
    packed = Packed(ids, mask, 30)
    assert packed.input_ids.size(0) > 1
    lengths = (packed.segments >= 0).sum(dim=1)
    assert (lengths**2).sum() <= 8 * (3 + 30) ** 2


def test_rows_the_layout_cannot_describe_are_left_to_the_unshared_pass():
    ok = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert packable(ok, 2)
    assert not packable(torch.tensor([[0, 1, 1, 0, 1]]), 2)  # a hole in the completion
    assert not packable(torch.tensor([[1, 0, 1, 1, 1]]), 2)  # padding inside the prompt
    assert not packable(torch.tensor([[0, 0, 0, 1, 1]]), 2)  # an empty prompt
    assert not packable(ok, 5)  # no prompt column


def test_attention_without_a_custom_mask_is_not_shared(tiny_model_dir):
    model = patched_model(tiny_model_dir)
    model.config._attn_implementation = "flash_attention_2"
    assert "attention implementation" in unsupported_reason(model)
    model.config._attn_implementation = "sdpa"
    model.config.sliding_window = 16
    assert unsupported_reason(model) == "sliding-window attention"


def test_eager_attention_shares_exactly_too(tiny_model_dir):
    model = patched_model(tiny_model_dir)
    model.config._attn_implementation = "eager"
    ids, mask = make_batch(model.config.vocab_size, [4, 9], 3, width=5, seed=3)
    assert_same_pass(model, ids, mask, 5)


def test_shared_pass_equals_the_unshared_pass_on_the_builtin_model(builtin_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = patched_model(builtin_model_dir, temperature=1.0)
    texts = ["The derivative of x^2 is", "Let p be a prime. Then the number of elements of the field is", "2 +"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    P, G, width = max(map(len, prompts)), 8, 4
    generator = torch.Generator().manual_seed(0)
    ids, mask = [], []
    for prompt in prompts:
        for _ in range(G):
            n = int(torch.randint(1, width + 1, (), generator=generator))
            completion = torch.randint(0, model.config.vocab_size, (n,), generator=generator).tolist()
            pad = tokenizer.pad_token_id
            ids.append([pad] * (P - len(prompt)) + prompt + completion + [pad] * (width - n))
            mask.append([0] * (P - len(prompt)) + [1] * (len(prompt) + n) + [0] * (width - n))
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    assert_same_pass(model, ids, mask, width, batch_size=8, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Whole training steps: the gradient with and without sharing
# --------------------------------------------------------------------------------------------


def step_gradient(config) -> tuple[dict[str, torch.Tensor], list[int], object]:
    """The gradient of the first optimizer step (after clipping), the row counts of the passes
    with gradients, and the trainer."""
    from transformers import TrainerCallback

    from rpt_cli.console import stderr
    from rpt_cli.training.run import build

    job = build(config, console=stderr)
    trainer = job.trainer
    captured: dict[str, torch.Tensor] = {}
    rows: list[int] = []

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if not captured:
                captured.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})

    original = type(trainer)._compute_loss

    def counting(self, model, inputs):
        rows.append(inputs["prompt_ids"].size(0))
        return original(self, model, inputs)

    trainer._compute_loss = types.MethodType(counting, trainer)
    trainer.add_callback(Capture())
    job.run(stderr)
    return captured, rows, trainer


@pytest.mark.parametrize("objective", ["rpt", "rlp"])
def test_a_training_step_has_the_same_gradient_with_shared_prompts(tiny_model_dir, tmp_path, objective, monkeypatch):
    from rpt_cli.reward import REWARD_FUNCTIONS
    from rpt_cli.training.config import resolve_config
    from tests.train_helpers import HashReward

    monkeypatch.setitem(REWARD_FUNCTIONS, HashReward.name, HashReward)
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(6)])
    settings = dict(
        samples=str(samples),
        model=str(tiny_model_dir),
        objective=objective,
        num_completions=4,
        contexts_per_step=3,
        micro_batch_size=2,  # 12 completions in 6 accumulation steps: groups split across micro-batches
        max_steps=1,
        save_steps=10,
        max_new_tokens=6,
        max_prompt_tokens=256,
        learning_rate=1e-3,
        gradient_checkpointing=objective == "rlp",  # the shared pass under checkpointing too
        dynamic_sampling_from_step=0,
        temperature=1.5,
    )
    if objective == "rpt":  # one-token answers, rewards varied within groups
        settings.update(reward="test-hash", answer="direct", max_new_tokens=1)
    grads = {}
    for shared in (False, True):
        config = resolve_config({**settings, "shared_prompt": shared, "output": str(tmp_path / f"run-{shared}")})
        grads[shared], rows, trainer = step_gradient(config)
        assert rows == [2] * 6
        assert (trainer.rpt_shared_off is None) == shared
    assert any(g.abs().sum() > 0 for g in grads[False].values())  # the step had something to learn
    for name, grad in grads[False].items():
        scale = grad.abs().max().clamp(min=1e-6)
        assert (grads[True][name] - grad).abs().max() / scale < 1e-4, name


# --------------------------------------------------------------------------------------------
# Generation in training: each prompt prefilled once
# --------------------------------------------------------------------------------------------


def test_training_generation_prefills_each_prompt_once_and_samples_as_trl(tiny_model_dir, tmp_path, monkeypatch):
    from rpt_cli.console import stderr
    from rpt_cli.generation import hf_backend
    from rpt_cli.training.config import resolve_config
    from rpt_cli.training.run import build

    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(4)])
    config = resolve_config(
        dict(
            samples=str(samples),
            output=str(tmp_path / "run"),
            model=str(tiny_model_dir),
            num_completions=4,
            contexts_per_step=2,
            max_new_tokens=5,
            max_steps=1,
            dynamic_sampling_from_step=0,
            temperature=1.5,
        )
    )
    trainer = build(config, console=stderr).trainer
    prefilled = []
    prefill = hf_backend.prefill_cache

    def counting(model, input_ids, attention_mask, **kwargs):
        prefilled.append(input_ids.size(0))
        return prefill(model, input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(hf_backend, "prefill_cache", counting)
    prompts = [[1, 5, 9, 13, 17], [2, 6, 10]]
    rows = [ids for ids in prompts for _ in range(4)]
    outputs = {}
    for shared in (True, False):
        trainer.rpt_shared_generation = shared
        torch.manual_seed(3)
        outputs[shared], _ = trainer._generate_single_turn(rows, None, {}, 4)
    assert prefilled == [2]  # the two distinct prompts, once each, and only when shared
    assert outputs[True] == outputs[False]
    assert len(outputs[True]) == 8 and all(1 <= len(ids) <= 5 for ids in outputs[True])
