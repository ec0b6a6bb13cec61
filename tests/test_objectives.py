"""`rpt train --objective ntp|rlp`: the information-gain reward against a hand computation, the
EMA teacher's update (alone and inside a run), the loss reaching thought tokens only, ntp lowering
the loss on its own training documents, resume, and the settings each objective refuses.

Everything runs on the tiny random Llama of conftest.py (a fraction of a second per step)."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.training.config import resolve_config
from rpt_cli.training.objectives import THOUGHT_CLOSE
from rpt_cli.training.rlp import TEACHER_FILE, EmaTeacher, InformationGain, ThoughtSplitter
from tests.conftest import build_tiny_model
from tests.test_train import TEXT, write_samples

CONTEXT_CUTS = (17, 25, 33, 41, 52, 60)


def load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def samples_for(tokenizer) -> list[dict]:
    """Samples cut from TEXT at token starts of the tiny tokenizer, boundaries = its token ends
    (all ASCII, so characters are bytes)."""
    spans = token_spans(tokenizer, TEXT)
    starts = [a for a, _ in spans]
    out = []
    for i, cut in enumerate(CONTEXT_CUTS):
        start = min(s for s in starts if s >= cut)
        target = TEXT[start : start + 8]
        ends = [b - start for a, b in spans if a >= start and b - start <= len(target)]
        out.append({"id": f"s{i}", "context": TEXT[:start], "target": target, "boundaries": ends, "split": "hard"})
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("teacher"), seed=1)


def run_cli(args: list[str]):
    result = CliRunner().invoke(app, args)
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def train_args(model: Path, samples: Path, out: Path, objective: str, *extra: str) -> list[str]:
    return [
        "train",
        str(samples),
        "-o",
        str(out),
        "--model",
        str(model),
        "--objective",
        objective,
        "-G",
        "4",
        "--contexts-per-step",
        "2",
        "--max-new-tokens",
        "12",
        "--max-prompt-tokens",
        "64",
        "--no-gradient-checkpointing",
        "--dynamic-sampling-from-step",
        "0",
        *extra,
    ]


# -- the information-gain reward --------------------------------------------------------------


def hand_logprob(model, ids: list[int], target: int) -> float:
    """log p(target | ids) from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    return float(torch.log_softmax(logits, dim=-1)[target])


def test_information_gain_matches_a_hand_computation(tiny_model_dir, teacher_dir):
    from rpt_cli.prompts import PromptBuilder, PromptConfig

    policy, tokenizer = load(tiny_model_dir)
    teacher, _ = load(teacher_dir)
    builder = PromptBuilder(tokenizer, PromptConfig(template="thought", chat=False, max_prompt_tokens=256))
    samples = samples_for(tokenizer)[:3]
    # thoughts: one that closes and goes on (the rest is not thought), one that never closes, one
    # that closes at once
    texts = [" the next is x" + THOUGHT_CLOSE + " trailing words", " no closer here at all", THOUGHT_CLOSE]
    thoughts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    gain = InformationGain(tokenizer, builder, max_context_tokens=256, batch_size=2)
    prompts = [builder.build(s["context"]) for s in samples]
    got = gain.gains(
        policy,
        teacher,
        prompts,
        thoughts,
        [s["context"] for s in samples],
        [s["target"] for s in samples],
        [s["boundaries"] for s in samples],
    )
    closer = tokenizer(THOUGHT_CLOSE, add_special_tokens=False)["input_ids"]
    assert tokenizer("a")["input_ids"] == tokenizer("a", add_special_tokens=False)["input_ids"], "no BOS to add"
    for sample, prompt, ids, text, (value, with_thought, without) in zip(samples, prompts, thoughts, texts, got):
        # the true next token: the token of context + target that starts where the context ends
        full = sample["context"] + sample["target"]
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        position = [a for a, _ in encoded["offset_mapping"]].index(len(sample["context"]))
        target_id = encoded["input_ids"][position]
        context_ids = encoded["input_ids"][:position]
        # the thought: its tokens up to the one that completes the first closer, else all + closer
        k = next((k for k in range(1, len(ids) + 1) if THOUGHT_CLOSE in tokenizer.decode(ids[:k])), None)
        thought = ids[:k] if k is not None else ids + closer
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        expected_with = hand_logprob(policy, prompt_ids + thought, target_id)
        expected_without = hand_logprob(teacher, context_ids, target_id)
        assert with_thought == pytest.approx(expected_with, abs=1e-4), text
        assert without == pytest.approx(expected_without, abs=1e-4), text
        assert value == pytest.approx(expected_with - expected_without, abs=2e-4), text
        # the policy and the teacher differ, so the baseline is really the teacher's
        assert without != pytest.approx(hand_logprob(policy, context_ids, target_id), abs=1e-3)


def test_thought_splitter_ends_after_the_closer(tiny_model_dir):
    _, tokenizer = load(tiny_model_dir)
    splitter = ThoughtSplitter(tokenizer, stop_ids=[tokenizer.eos_token_id])
    ids = tokenizer("ab</think>cd", add_special_tokens=False)["input_ids"]
    length, closed = splitter.split(ids)
    assert closed and tokenizer.decode(ids[:length]).endswith("</think>")
    assert THOUGHT_CLOSE not in tokenizer.decode(ids[: length - 1])
    # stop tokens at the end are not thought; a thought that never closes gets the closer appended
    open_ids = tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert splitter.split(open_ids + [tokenizer.eos_token_id]) == (len(open_ids), False)
    assert tokenizer.decode(splitter.thought_ids(open_ids)) == "abc</think>"


# -- the EMA teacher ----------------------------------------------------------------------------


def test_ema_update_is_the_exponential_moving_average(tiny_model_dir):
    policy, _ = load(tiny_model_dir)
    teacher = EmaTeacher(decay=0.9)
    teacher.update(policy)  # before the start: nothing to move
    teacher.start(policy)
    before = {name: p.detach().clone() for name, p in teacher.model.named_parameters()}
    torch.manual_seed(3)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(policy)
    moved = dict(policy.named_parameters())
    for name, p in teacher.model.named_parameters():
        assert not p.requires_grad
        torch.testing.assert_close(p, 0.9 * before[name] + 0.1 * moved[name], rtol=1e-6, atol=1e-6)
    # it is a copy: changing the policy again does not change the teacher until the next update
    snapshot = {name: p.detach().clone() for name, p in teacher.model.named_parameters()}
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(2)
    for name, p in teacher.model.named_parameters():
        assert torch.equal(p, snapshot[name])


def test_rlp_run_updates_the_teacher_once_per_step_and_resumes_it(tiny_model_dir, tmp_path):
    """After step 1 of a run with decay 0.5, the saved teacher is 0.5 θ0 + 0.5 θ1 (θ0 the base,
    θ1 the policy after the step); a run resumed from that checkpoint ends with the teacher an
    uninterrupted run ends with."""
    _, tokenizer = load(tiny_model_dir)
    samples = write_samples(tmp_path / "s.jsonl", samples_for(tokenizer))
    whole = tmp_path / "whole"
    args = train_args(tiny_model_dir, samples, whole, "rlp", "--ema-decay", "0.5", "--save-steps", "1")
    result = run_cli([*args, "--max-steps", "2", "--learning-rate", "1e-3"])
    assert result.exit_code == 0, result.output
    base = load_file(tiny_model_dir / "model.safetensors")
    step1 = load_file(whole / "checkpoint-1" / "model.safetensors")
    teacher1 = torch.load(whole / "checkpoint-1" / TEACHER_FILE, weights_only=True)
    changed = 0
    for name, value in base.items():
        expected = 0.5 * value + 0.5 * step1[name]
        torch.testing.assert_close(teacher1[name], expected, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, step1[name])
    assert changed, "the step moved the policy"
    steps = read_jsonl(whole / "metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2]
    assert all(math.isfinite(s["reward_mean"]) and s["reward_std"] > 0 for s in steps), "dense rewards vary"
    assert read_jsonl(whole / "batches.jsonl")[0]["drawn"]

    # interrupted after step 1, resumed to step 2
    part = tmp_path / "part"
    args = train_args(tiny_model_dir, samples, part, "rlp", "--ema-decay", "0.5", "--save-steps", "1")
    assert run_cli([*args, "--max-steps", "1", "--learning-rate", "1e-3"]).exit_code == 0
    result = run_cli([*args, "--max-steps", "2", "--learning-rate", "1e-3", "--resume"])
    assert result.exit_code == 0, result.output
    a = torch.load(whole / "checkpoint-2" / TEACHER_FILE, weights_only=True)
    b = torch.load(part / "checkpoint-2" / TEACHER_FILE, weights_only=True)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert [s["reward_mean"] for s in read_jsonl(part / "metrics.jsonl")] == pytest.approx(
        [s["reward_mean"] for s in steps], abs=1e-5
    )


# -- the loss reaches thought tokens only -------------------------------------------------------


def test_rlp_loss_touches_only_thought_tokens(tiny_model_dir, tmp_path):
    from rich.console import Console

    from rpt_cli.training.run import build

    _, tokenizer = load(tiny_model_dir)
    samples = write_samples(tmp_path / "s.jsonl", samples_for(tokenizer))
    settings = resolve_config(
        {
            "samples": str(samples),
            "output": str(tmp_path / "run"),
            "model": str(tiny_model_dir),
            "objective": "rlp",
            "num_completions": 2,
            "contexts_per_step": 1,
            "max_new_tokens": 16,
            "max_prompt_tokens": 64,
            "gradient_checkpointing": False,
        }
    )
    job = build(settings, console=Console(stderr=True, quiet=True))
    trainer = job.trainer
    prompt = tokenizer("Let x be", add_special_tokens=False)["input_ids"]
    thought = tokenizer(" so the next is two", add_special_tokens=False)["input_ids"]
    closer = tokenizer(THOUGHT_CLOSE, add_special_tokens=False)["input_ids"]
    after = tokenizer(" then more words", add_special_tokens=False)["input_ids"]
    completion = thought + closer + after

    def batch(ids: list[int]) -> dict:
        return trainer._mask_untrained(
            {
                "prompt_ids": torch.tensor([prompt]),
                "prompt_mask": torch.ones(1, len(prompt), dtype=torch.long),
                "completion_ids": torch.tensor([ids]),
                "completion_mask": torch.ones(1, len(ids), dtype=torch.long),
                "advantages": torch.tensor([1.0]),
                "num_items_in_batch": torch.tensor(len(thought + closer)),
            }
        )

    def loss_and_grad(inputs: dict) -> tuple[float, torch.Tensor]:
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        grad = trainer.model.get_input_embeddings().weight.grad.detach().clone()
        return float(loss.detach()), grad

    inputs = batch(completion)
    assert inputs["completion_mask"].tolist() == [[1] * len(thought + closer) + [0] * len(after)]
    loss, grad = loss_and_grad(inputs)
    assert grad.abs().sum() > 0
    # other tokens after the thought: the same loss and the same policy gradient (the embedding matrix is
    # tied to the output layer, so its gradient sees every position the loss counts)
    other_after = [(t + 7) % len(tokenizer) for t in after]
    loss2, grad2 = loss_and_grad(batch(thought + closer + other_after))
    assert loss2 == pytest.approx(loss, abs=1e-6)
    torch.testing.assert_close(grad2, grad)
    # another thought token: another gradient (the loss value itself is -advantage on policy: the
    # ratio is 1, its gradient is the policy gradient)
    _, grad3 = loss_and_grad(batch([(thought[0] + 7) % len(tokenizer), *thought[1:], *closer, *after]))
    assert not torch.allclose(grad3, grad)


# -- ntp ------------------------------------------------------------------------------------------


def document_loss(model, tokenizer, samples: list[dict]) -> float:
    """Mean next-token loss over each sample's context + target (to its last boundary)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for s in samples:
            text = s["context"] + s["target"][: s["boundaries"][-1]]
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            logits = model(ids).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            total, count = total + float(nll), count + ids.shape[1] - 1
    return total / count


def test_ntp_lowers_the_loss_on_its_training_documents_and_resumes(tiny_model_dir, tmp_path):
    base, tokenizer = load(tiny_model_dir)
    records = samples_for(tokenizer)[:4]
    samples = write_samples(tmp_path / "s.jsonl", records)
    out = tmp_path / "ntp"
    args = train_args(tiny_model_dir, samples, out, "ntp", "--learning-rate", "3e-3", "--save-steps", "3")
    result = run_cli([*args, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    result = run_cli([*args, "--max-steps", "8", "--resume"])
    assert result.exit_code == 0, result.output
    steps = read_jsonl(out / "metrics.jsonl")
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert all(s["trained_tokens"] > 0 and s["grad_norm"] > 0 for s in steps)
    assert steps[-1]["flops"] > steps[0]["flops"] > 0
    # every step drew the sequences DataOrder gives it: here the samples' one document, cut into
    # sequences of at most 64 tokens, named after its longest sample
    from rpt_cli.training.data import DataOrder

    longest = max(records, key=lambda r: len(r["context"]))["id"]
    drawn = [b["drawn"] for b in read_jsonl(out / "batches.jsonl")]
    parts = sorted({i for step in drawn for i in step})
    assert parts and all(p == longest or p.startswith(f"{longest}#") for p in parts)
    order = DataOrder(len(parts), 2, 0)
    names = [longest] if len(parts) == 1 else [f"{longest}#{k}" for k in range(len(parts))]
    assert drawn == [[names[i] for i in order.step_indices(s)] for s in range(8)]
    trained, _ = load(out / "final")
    before, after = document_loss(base, tokenizer, records), document_loss(trained, tokenizer, records)
    assert after < before - 0.5, (before, after)


def test_ntp_trains_each_documents_tokens_once_a_pass(tiny_model_dir, tmp_path):
    """The paper's baseline trains the corpus, not the samples: six samples of one document and two
    of another are two documents, each trained once in a pass (its opening too, not once per
    sample), in sequences of at most --max-prompt-tokens tokens; one step of as many sequences as
    there are is exactly one pass, and trained_tokens is the documents' tokens."""
    _, tokenizer = load(tiny_model_dir)
    first = samples_for(tokenizer)  # six positions of TEXT, contexts from its start
    other = "Hence the answer is 3. Let x be a real number."
    spans = token_spans(tokenizer, other)
    second = []
    for i, (start, _) in enumerate(spans[3:5]):
        target = other[start : start + 8]
        ends = [b - start for a, b in spans if a >= start and b - start <= len(target)]
        second.append({"id": f"o{i}", "context": other[:start], "target": target, "boundaries": ends})
    records = first + second
    samples = write_samples(tmp_path / "s.jsonl", records)
    # by hand: each document's longest text, its tokens, cut into parts of at most 64
    expected_ids, expected_tokens = [], 0
    for group in (first, second):
        longest = max(group, key=lambda r: len(r["context"]))
        text = longest["context"] + longest["target"][: longest["boundaries"][-1]]
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        parts = [ids[k : k + 64] for k in range(0, len(ids), 64)]
        expected_ids += [longest["id"]] if len(parts) == 1 else [f"{longest['id']}#{k}" for k in range(len(parts))]
        expected_tokens += len(ids)
    out = tmp_path / "ntp"
    args = train_args(tiny_model_dir, samples, out, "ntp", "--max-steps", "1", "--save-steps", "5")
    args[args.index("--contexts-per-step") + 1] = str(len(expected_ids))
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    (step,) = read_jsonl(out / "metrics.jsonl")
    (batch,) = read_jsonl(out / "batches.jsonl")
    assert sorted(batch["drawn"]) == sorted(expected_ids)
    assert step["trained_tokens"] == expected_tokens
    assert "2 documents rebuilt from the samples" in result.output


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--objective", "sft"], "--objective sft: choose one of rpt, ntp, rlp, coldstart"),
        (["--objective", "rlp", "--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
    ],
)
def test_bad_objective_settings_are_one_line_errors(tiny_model_dir, tmp_path, extra, message):
    samples = write_samples(tmp_path / "s.jsonl", [{"id": "a", "context": "ab", "target": "c", "boundaries": [1]}])
    result = run_cli(["train", str(samples), "-o", str(tmp_path / "run"), "--model", str(tiny_model_dir), *extra])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {message}"
    assert not (tmp_path / "run").exists()


def test_rlp_refuses_several_processes(tiny_model_dir, tmp_path, monkeypatch):
    samples = write_samples(tmp_path / "s.jsonl", [{"id": "a", "context": "ab", "target": "c", "boundaries": [1]}])
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_cli(
        ["train", str(samples), "-o", str(tmp_path / "run"), "--objective", "rlp", "--contexts-per-step", "2"]
    )
    assert result.exit_code == 2
    assert "--objective rlp" in result.output and "one process only" in result.output


# -- rpt eval --mode gain -----------------------------------------------------------------------


def test_eval_gain_reports_the_mean_information_gain_per_split(tiny_model_dir, tmp_path):
    model, tokenizer = load(tiny_model_dir)
    samples = samples_for(tokenizer)
    for sample, split in zip(samples, ("hard", "hard", "easy", "easy", "medium", "none")):
        sample["split"] = split
    path = tmp_path / "val.jsonl"
    path.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    out, details = tmp_path / "reports.jsonl", tmp_path / "details.jsonl"
    args = ["eval", str(path), "-m", str(tiny_model_dir), "--mode", "ntp", "--mode", "gain", "-G", "3"]
    result = run_cli([*args, "--max-new-tokens", "6", "-o", str(out), "--details", str(details)])
    assert result.exit_code == 0, result.output
    ntp, gain = read_jsonl(out)
    assert (ntp["mode"], gain["mode"]) == ("ntp", "gain")
    rows = [row for row in read_jsonl(details) if row["mode"] == "gain"]
    assert len(rows) == len(samples) and all(len(row["gains"]) == 3 for row in rows)
    closer = tokenizer(THOUGHT_CLOSE, add_special_tokens=False)["input_ids"]
    for sample, row in zip(samples, rows):
        # each gain by hand: the prompt, the thought (closed), then the true next token, against
        # the context alone, both under the model evaluated
        full = sample["context"] + sample["target"]
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        position = [a for a, _ in encoded["offset_mapping"]].index(len(sample["context"]))
        target_id, context_ids = encoded["input_ids"][position], encoded["input_ids"][:position]
        without = hand_logprob(model, context_ids, target_id)
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert row["prompt"] == sample["context"] + "<think>"
        for completion, value in zip(row["completions"], row["gains"]):
            ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
            k = next((k for k in range(1, len(ids) + 1) if THOUGHT_CLOSE in tokenizer.decode(ids[:k])), None)
            thought = ids[:k] if k is not None else ids + closer
            expected = hand_logprob(model, prompt_ids + thought, target_id) - without
            assert value == pytest.approx(expected, abs=2e-4)
        assert row["info_gain"] == pytest.approx(sum(row["gains"]) / 3)
        assert row["accuracy"] == pytest.approx(sum(g > 0 for g in row["gains"]) / 3)
    # the report: mean gain and positive share overall and per nested split, with a normal interval
    means = [row["info_gain"] for row in rows]
    assert gain["info_gain"] == pytest.approx(sum(means) / len(means))
    assert gain["accuracy"] == pytest.approx(sum(row["accuracy"] for row in rows) / len(rows))
    low, high = gain["info_gain_ci95"]
    assert low < gain["info_gain"] < high
    labels = [row["split"] for row in rows]
    hard = [m for m, label in zip(means, labels) if label == "hard"]
    medium = [m for m, label in zip(means, labels) if label in ("hard", "medium")]
    assert gain["splits"]["hard"]["info_gain"] == pytest.approx(sum(hard) / len(hard))
    assert gain["splits"]["medium"]["info_gain"] == pytest.approx(sum(medium) / len(medium))
    assert gain["splits"]["hard"]["info_gain_n"] == 2
    assert gain["settings"]["template"] == "thought" and gain["settings"]["k"] == 3
    assert "gain" in result.output  # the table on stderr has the gain row
