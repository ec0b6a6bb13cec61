"""Tokenizer identity of samples, and boundaries re-derived in the policy's tokens (boundaries.py).

Real tokenizers throughout: the built-in SmolLM2 tokenizer, the tiny test model's byte-level BPE
(trained here on a few sentences, so it splits text very differently) and a SentencePiece-style
byte-fallback tokenizer. The truth a re-derived boundary is checked against is the policy
tokenizer's own tokenization of the whole document.
"""

from __future__ import annotations

import functools
import shutil

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.boundaries import PolicyTokenizer, fingerprint, identity_of
from rpt_cli.cli import app
from rpt_cli.filter import FilterOptions, filter_documents
from rpt_cli.tokens import DocTokenizer
from tests.conftest import EXAMPLES, build_byte_fallback_tokenizer
from tests.test_eval import read_jsonl, write_jsonl


@functools.cache
def documents(count: int) -> tuple[str, ...]:
    return tuple(orjson.loads(line)["text"] for line in (EXAMPLES / "corpus.jsonl").read_bytes().splitlines()[:count])


@functools.cache
def document_offsets(tokenizer, doc_id: str) -> tuple[int, ...]:
    text = documents(6)[int(doc_id.removeprefix("d"))]
    return tuple(DocTokenizer(tokenizer)([text])[0].offsets)


def made_with(tokenizer, name: str, *, docs: int = 6, target_tokens: int = 8) -> list[dict]:
    """Every position of the first documents as the real `rpt filter` code makes samples from
    `tokenizer`'s offsets, stamped with its identity as `rpt entropy` stamps scored documents."""
    stamp = identity_of(tokenizer, name).as_field()
    scored = []
    for k, text in enumerate(documents(docs)):
        offsets = DocTokenizer(tokenizer)([text])[0].offsets
        scored.append(
            {
                "id": f"d{k}",
                "text": text,
                "offsets": offsets,
                "tokenizer": stamp,
                "entropy": [None] + [1.0] * (len(offsets) - 2),
            }
        )
    opts = FilterOptions(min_context_tokens=1, target_tokens=target_tokens)
    return list(filter_documents(enumerate(scored, start=1), opts))


def true_ends(tokenizer, sample: dict) -> tuple[bool, list[int]]:
    """Whether the sample's position starts a token of `tokenizer` in the whole document, and the
    ends of its tokens inside the target there."""
    offsets = document_offsets(tokenizer, sample["doc_id"])
    start = len(sample["context"].encode())
    end = start + len(sample["target"].encode())
    return start in offsets, [o - start for o in offsets if start < o <= end]


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir, builtin_model_dir):
    from transformers import AutoTokenizer

    return {
        "builtin": AutoTokenizer.from_pretrained(builtin_model_dir),
        "tiny": AutoTokenizer.from_pretrained(tiny_model_dir),
        "byte-fallback": build_byte_fallback_tokenizer(),
    }


def test_the_fingerprint_follows_what_decides_tokens_and_nothing_else(tiny_model_dir, tmp_path, tokenizers):
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    tiny = tokenizers["tiny"]
    original = fingerprint(tiny)
    assert len(original) == 16 and original != fingerprint(tokenizers["builtin"])
    # saved and loaded again, with other padding, length limit, chat template and post-processor
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    changed = AutoTokenizer.from_pretrained(copy)
    changed.padding_side = "left"
    changed.model_max_length = 7
    changed.chat_template = "{{ messages }}"
    changed.save_pretrained(copy)
    assert fingerprint(AutoTokenizer.from_pretrained(copy)) == original
    # the same vocabulary with another normalization tokenizes other text: another fingerprint
    lowered = AutoTokenizer.from_pretrained(tiny_model_dir)
    lowered.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert fingerprint(lowered) != original


@pytest.mark.parametrize(
    "maker, policy, least_kept", [("builtin", "tiny", 0.9), ("tiny", "builtin", 0.5), ("builtin", "byte-fallback", 0.7)]
)
def test_rederived_boundaries_are_the_policys_token_ends_in_the_whole_document(tokenizers, maker, policy, least_kept):
    samples = made_with(tokenizers[maker], maker)
    policy_tokenizer = PolicyTokenizer(tokenizers[policy], policy)
    found = policy_tokenizer.rederive([s["context"] for s in samples], [s["target"] for s in samples])
    kept = 0
    for sample, boundaries in zip(samples, found):
        starts_token, ends = true_ends(tokenizers[policy], sample)
        if isinstance(boundaries, str):
            # refused only where the position is no token start of the policy, or no end is certain
            assert not starts_token or "certain" in boundaries, (sample["id"], boundaries)
            continue
        kept += 1
        assert starts_token, sample["id"]
        # never a boundary the whole document does not have; the first is the policy's next token
        assert list(boundaries) == ends[: len(boundaries)], (sample["id"], sample["target"], boundaries, ends)
    assert kept >= least_kept * len(samples), (kept, len(samples))


def test_the_same_tokenizer_keeps_the_samples_boundaries(tokenizers):
    from rpt_cli.boundaries import align

    samples = made_with(tokenizers["tiny"], "tiny", docs=2)
    found, alignment = align(list(enumerate(samples, 1)), PolicyTokenizer(tokenizers["tiny"], "tiny"), "s.jsonl")
    assert found == [None] * len(samples) and not alignment.rederived and alignment.unmarked == 0
    # re-deriving them anyway gives what rpt filter wrote, less the ends after the last word's start
    redone = PolicyTokenizer(tokenizers["tiny"], "tiny").rederive(
        [s["context"] for s in samples], [s["target"] for s in samples]
    )
    for sample, boundaries in zip(samples, redone):
        if not isinstance(boundaries, str):
            assert list(boundaries) == sample["boundaries"][: len(boundaries)]


# --------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------


def split_samples(tokenizers) -> tuple[list[dict], list[dict], list]:
    """Built-in-made samples that the tiny tokenizer can re-derive (the first twelve) and those it
    cannot, with the tiny tokenizer's boundaries of the first."""
    samples = made_with(tokenizers["builtin"], "smollm2-135m", docs=3)
    found = PolicyTokenizer(tokenizers["tiny"], "tiny").rederive(
        [s["context"] for s in samples], [s["target"] for s in samples]
    )
    good = [(s, b) for s, b in zip(samples, found) if not isinstance(b, str)]
    bad = [s for s, b in zip(samples, found) if isinstance(b, str)]
    assert any(list(b) != s["boundaries"] for s, b in good[:12])  # the two tokenizers differ here
    return [s for s, _ in good[:12]], bad, [list(b) for _, b in good[:12]]


def test_eval_judges_the_models_own_tokens(tokenizers, tiny_model_dir, tmp_path):
    good, bad, expected = split_samples(tokenizers)
    samples = write_jsonl(tmp_path / "samples.jsonl", good)
    result = CliRunner().invoke(
        app, ["eval", str(samples), "-m", str(tiny_model_dir), "--details", str(tmp_path / "details.jsonl")]
    )
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["tokenizer"] == {
        "name": tiny_model_dir.name,
        "fingerprint": fingerprint(tokenizers["tiny"]),
        "samples_unmarked": 0,
        "samples_rederived": 12,
        "samples_skipped": 0,
    }
    assert [d["boundaries"] for d in read_jsonl((tmp_path / "details.jsonl").read_bytes())] == expected
    assert "12 sample(s) were made with tokenizer smollm2-135m" in result.stderr
    assert "re-derived" in result.stderr

    # one sample the tiny tokenizer cannot re-derive: one line naming the file, line and both tokenizers
    write_jsonl(samples, good[:3] + bad[:1] + good[3:])
    out = tmp_path / "reports.jsonl"
    result = CliRunner().invoke(app, ["eval", str(samples), "-m", str(tiny_model_dir), "-o", str(out)])
    assert result.exit_code == 2 and not out.exists()
    message = result.stderr.strip()
    assert "\n" not in message and message.startswith(f"error: {samples}:4: ")
    assert "smollm2-135m (" + fingerprint(tokenizers["builtin"]) + ")" in message
    assert f"{tiny_model_dir.name} ({fingerprint(tokenizers['tiny'])})" in message
    # --skip-bad leaves it out and says so
    result = CliRunner().invoke(app, ["eval", str(samples), "-m", str(tiny_model_dir), "--skip-bad"])
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["n"] == 12 and report["tokenizer"]["samples_skipped"] == 1
    assert f"skipped 1 bad record(s); first: {samples}:4:" in result.stderr


def test_samples_without_an_identity_keep_their_boundaries_with_a_note(tokenizers, tiny_model_dir, tmp_path):
    good, _, _ = split_samples(tokenizers)
    unmarked = [{k: v for k, v in s.items() if k != "tokenizer"} for s in good]
    samples = write_jsonl(tmp_path / "samples.jsonl", unmarked)
    result = CliRunner().invoke(
        app, ["eval", str(samples), "-m", str(tiny_model_dir), "--details", str(tmp_path / "details.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert [d["boundaries"] for d in read_jsonl((tmp_path / "details.jsonl").read_bytes())] == [
        s["boundaries"] for s in good
    ]
    assert "12 sample(s) carry no tokenizer identity" in result.stderr
    # a malformed identity is bad input
    write_jsonl(samples, unmarked[:1] + [{**unmarked[1], "tokenizer": "smollm2"}])
    result = CliRunner().invoke(app, ["eval", str(samples), "-m", str(tiny_model_dir)])
    assert result.exit_code == 2 and result.stderr.startswith(f'error: {samples}:2: field "tokenizer"')


def test_rpt_entropy_stamps_its_tokenizer_and_rpt_filter_carries_it(tiny_model_dir, tokenizers, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in documents(2)])
    scored = tmp_path / "scored.jsonl"
    assert (
        CliRunner().invoke(app, ["entropy", str(corpus), "-m", str(tiny_model_dir), "-o", str(scored)]).exit_code == 0
    )
    stamp = {"name": tiny_model_dir.name, "fingerprint": fingerprint(tokenizers["tiny"])}
    assert all(doc["tokenizer"] == stamp for doc in read_jsonl(scored.read_bytes()))
    result = CliRunner().invoke(app, ["filter", str(scored), "--per-doc", "3"])
    assert result.exit_code == 0 and all(s["tokenizer"] == stamp for s in read_jsonl(result.stdout))


def test_rpt_reward_with_a_model_scores_against_the_models_tokens(tokenizers, tiny_model_dir, tmp_path):
    good, _, expected = split_samples(tokenizers)
    # a sample where the policy's next token ends where no token of the samples' tokenizer does
    index = next(i for i, (s, b) in enumerate(zip(good, expected)) if b[0] not in s["boundaries"])
    sample, policy_ends = good[index], expected[index]
    as_policy = sample["target"].encode()[: policy_ends[0]].decode()
    rollout = {**sample, "completions": [f"</think> \\boxed{{{as_policy}}}", "</think> \\boxed{@@}"]}
    rollouts = write_jsonl(tmp_path / "rollouts.jsonl", [rollout])
    result = CliRunner().invoke(app, ["reward", str(rollouts), "--reward", "first-token", "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    scored = read_jsonl(result.stdout)[0]
    assert scored["rewards"] == [1.0, 0.0]
    assert scored["boundaries"] == policy_ends
    assert scored["tokenizer"]["fingerprint"] == fingerprint(tokenizers["tiny"])
    assert scored["rederived_from"] == {"tokenizer": sample["tokenizer"], "boundaries": sample["boundaries"]}
    assert "1 sample(s) were made with tokenizer smollm2-135m" in result.stderr
    # the reward without a model reads the boundaries as given: the policy's token is no answer there
    result = CliRunner().invoke(app, ["reward", str(rollouts)])
    scored = read_jsonl(result.stdout)[0]
    assert scored["boundaries"] == sample["boundaries"] and scored["rewards"] == [0.0, 0.0]


def test_train_draws_on_the_policys_boundaries(tokenizers, tiny_model_dir, tmp_path, monkeypatch):
    from tests.train_helpers import RecordingReward

    monkeypatch.setitem(
        __import__("rpt_cli.reward", fromlist=["REWARD_FUNCTIONS"]).REWARD_FUNCTIONS,
        RecordingReward.name,
        RecordingReward,
    )
    RecordingReward.calls = []
    good, bad, expected = split_samples(tokenizers)
    samples = write_jsonl(tmp_path / "samples.jsonl", good[:4])
    args = [
        "train",
        str(samples),
        "--model",
        str(tiny_model_dir),
        "-G",
        "2",
        "--contexts-per-step",
        "4",
        "--answer",
        "direct",
        "--max-new-tokens",
        "2",
        "--max-prompt-tokens",
        "256",
        "--no-gradient-checkpointing",
        "--max-steps",
        "1",
        "--reward",
        RecordingReward.name,
    ]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    by_id = {s["id"]: b for s, b in zip(good, expected)}
    seen = {i: b for call in RecordingReward.calls for i, b in zip(call["id"], call["boundaries"])}
    assert seen and all(seen[i] == by_id[i] for i in seen)
    run = orjson.loads((tmp_path / "run" / "run.json").read_bytes())
    assert run["tokenizer"]["samples_rederived"] == 4
    assert "4 sample(s) were made with tokenizer smollm2-135m" in result.stderr
    # a sample that cannot be re-derived stops the run before it starts, naming its line
    write_jsonl(samples, good[:2] + bad[:1])
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "run2")])
    assert result.exit_code == 2 and not (tmp_path / "run2").exists()
    assert result.stderr.startswith(
        f"error: {samples}:3: this sample's boundaries were made with tokenizer smollm2-135m"
    )


def test_rpt_reward_checks_the_tokenizer_of_the_policy_that_made_the_rollouts(tiny_model_dir, tmp_path):
    """Samples made with a SentencePiece tokenizer, rolled out by the tiny model (another
    tokenizer): the rollouts name the policy's tokenizer, and `rpt reward` refuses them in one
    line without --model, re-derives the boundaries with --model's tokenizer as train and eval
    do, and refuses a --model whose tokenizer is not the one that made the rollouts."""
    from transformers import AutoTokenizer

    from tests.conftest import build_constant_model

    tiny, sentencepiece = AutoTokenizer.from_pretrained(tiny_model_dir), build_byte_fallback_tokenizer()
    samples = made_with(sentencepiece, "byte-fallback", docs=2)
    derived = PolicyTokenizer(tiny, "tiny").rederive([s["context"] for s in samples], [s["target"] for s in samples])
    usable = [(s, list(b)) for s, b in zip(samples, derived) if not isinstance(b, str) and list(b) != s["boundaries"]]
    assert len(usable) >= 3
    path = write_jsonl(tmp_path / "samples.jsonl", [s for s, _ in usable[:3]])
    rollouts = tmp_path / "rollouts.jsonl"
    args = ["rollout", str(path), "-m", str(tiny_model_dir), "--backend", "hf", "--answer", "direct", "-G", "2"]
    result = CliRunner().invoke(app, [*args, "-o", str(rollouts)])
    assert result.exit_code == 0, result.output
    made = read_jsonl(rollouts.read_bytes())
    assert all(r["rollout"]["tokenizer"]["fingerprint"] == fingerprint(tiny) for r in made)

    scored = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["reward", str(rollouts), "-o", str(scored)])
    assert result.exit_code == 2 and not scored.exists()
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {rollouts}:1: this sample's boundaries")
    assert f"pass --model {made[0]['rollout']['model']} to re-derive" in result.stderr

    result = CliRunner().invoke(app, ["reward", str(rollouts), "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    out = read_jsonl(result.stdout)
    assert [r["boundaries"] for r in out] == [b for _, b in usable[:3]]
    assert all(r["rederived_from"]["tokenizer"]["name"] == "byte-fallback" for r in out)
    assert "3 sample(s) were made with tokenizer byte-fallback" in result.stderr

    other = build_constant_model(tmp_path / "other", sentencepiece, 0)
    result = CliRunner().invoke(app, ["reward", str(rollouts), "-m", str(other)])
    assert result.exit_code == 2 and "this rollout was made by a policy with tokenizer" in result.stderr
