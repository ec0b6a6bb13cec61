"""`rpt filter`: selection, split labels, samples that rebuild the document exactly, sampling,
bad input, streaming behaviour, and the entropy → filter pipe."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.filter import (
    SPLIT_THRESHOLDS,
    FilterOptions,
    filter_documents,
    in_split,
    split_label,
)

runner = CliRunner()


def scored(text: str, cuts: list[int], entropy: list, **extra) -> dict:
    """A scored document whose tokens end at the given byte cuts."""
    data = text.encode("utf-8")
    offsets = [0, *cuts, len(data)]
    assert len(entropy) == len(offsets) - 1
    return {"id": "doc", "text": text, "offsets": offsets, "entropy": entropy, **extra}


def run(docs: list[dict], **options) -> list[dict]:
    return list(filter_documents(list(enumerate(docs, start=1)), FilterOptions(**options)))


@given(st.floats(min_value=0, max_value=5, allow_nan=False))
def test_split_label_is_the_hardest_threshold_exceeded(value):
    label = split_label(value)
    exceeded = [name for name, t in SPLIT_THRESHOLDS.items() if value > t]
    assert label == (exceeded[-1] if exceeded else "none")
    for split in SPLIT_THRESHOLDS:  # nested: hard ⊂ medium ⊂ easy
        assert in_split(label, split) == (value > SPLIT_THRESHOLDS[split])


def test_context_and_target_rebuild_the_document():
    text = "We have $x = 3$, so $2x = 6$."
    cuts = [2, 7, 9, 11, 14, 16, 19, 21, 24]
    doc = scored(text, cuts, [None, 0.1, 0.6, 1.2, 1.7, 0.0, 2.0, 0.9, 1.1, 1.6])
    samples = run([doc], min_context_tokens=1, target_tokens=3)
    assert [s["position"] for s in samples] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    offsets = doc["offsets"]
    for s in samples:
        i = s["position"]
        assert s["id"] == f"doc@{i}" and s["doc_id"] == "doc"
        assert s["context"] == text.encode()[: offsets[i]].decode()
        assert s["target"] == text.encode()[offsets[i] : offsets[min(i + 3, 10)]].decode()
        assert s["boundaries"] == [offsets[j] - offsets[i] for j in range(i + 1, min(i + 3, 10) + 1)]
        assert s["context"] + s["target"] == text[: len(s["context"] + s["target"])]
        assert s["split"] == split_label(s["entropy"])


def test_thresholds_and_splits():
    doc = scored("abcdefgh", [1, 2, 3, 4, 5, 6, 7], [None, 0.4, 0.5, 0.51, 1.0, 1.01, 1.5, 1.51])
    positions = lambda **o: [s["position"] for s in run([doc], **{"min_context_tokens": 1, **o})]  # noqa: E731
    assert positions(min_entropy=1.0) == [5, 6, 7]
    assert positions(max_entropy=1.0) == [1, 2, 3, 4]
    assert positions(min_entropy=0.5, max_entropy=1.5) == [3, 4, 5, 6]
    assert positions(split="easy") == [3, 4, 5, 6, 7]
    assert positions(split="medium") == [5, 6, 7]
    assert positions(split="hard") == [7]
    assert positions(min_context_tokens=6) == [6, 7]
    labels = {s["position"]: s["split"] for s in run([doc], min_context_tokens=1)}
    assert labels == {1: "none", 2: "none", 3: "easy", 4: "easy", 5: "medium", 6: "medium", 7: "hard"}


def test_max_context_tokens_cuts_from_the_left_at_a_token_boundary():
    text = "one two three four five"
    doc = scored(text, [3, 7, 13, 18], [None, 1.0, 1.0, 1.0, 1.0])
    (sample,) = run([doc], min_context_tokens=4, max_context_tokens=2)
    assert sample["context"] == " three four"


def test_positions_inside_a_character_are_skipped_and_targets_finish_characters():
    text = "a😀b"  # the emoji's four bytes split over two tokens, as byte-level BPE does
    doc = scored(text, [1, 3, 5], [None, 2.0, 2.0, 2.0])
    samples = run([doc], min_context_tokens=1, target_tokens=1)
    assert [s["position"] for s in samples] == [1, 3]  # position 2 starts inside the emoji
    # the target is extended to finish the emoji with the document's own token, whose end is listed
    assert samples[0]["target"] == "😀" and samples[0]["boundaries"] == [2, 4]


def test_every_token_end_inside_an_extended_target_is_a_boundary():
    from rpt_cli.reward import prefix_match

    text = "ab😀c"  # "a" | "b" | f0 9f | 98 | 80 | "c": the second target token ends inside the emoji
    doc = scored(text, [1, 2, 4, 5, 6], [None, 2.0, 2.0, 2.0, 2.0, 2.0])
    (sample, *_) = run([doc], min_context_tokens=1, target_tokens=2)
    assert sample["context"] == "a" and sample["target"] == "b😀"
    assert sample["boundaries"] == [1, 3, 4, 5]  # 5, the true end of the emoji's last token, was missing
    assert prefix_match("b😀", sample["target"], sample["boundaries"]) == 1.0


def test_per_doc_and_fraction_sampling_are_seeded():
    docs = [scored("x" * 200, list(range(1, 200)), [None] + [2.0] * 199, id=f"d{k}") for k in range(5)]
    picks = lambda seed, **o: [(s["doc_id"], s["position"]) for s in run(docs, seed=seed, **o)]  # noqa: E731
    a, b = picks(1, per_doc=3), picks(1, per_doc=3)
    assert a == b and len(a) == 15 and picks(2, per_doc=3) != a
    frac = picks(7, fraction=0.25)
    assert 0.15 < len(frac) / (5 * 184) < 0.35
    assert picks(7, fraction=0.25) == frac
    # a document's picks do not depend on the other documents around it
    alone = [(s["doc_id"], s["position"]) for s in run(docs[2:3], seed=1, per_doc=3)]
    assert alone == [p for p in a if p[0] == "d2"]
    assert all(s["filter_seed"] == 1 for s in run(docs, seed=1, per_doc=3))


def test_unknown_fields_pass_through_and_default_id_is_the_content_id():
    from rpt_cli.holdout import content_id

    doc = scored("ab", [1], [None, 2.0], source="web", entropy_model="m")
    del doc["id"]
    (sample,) = run([doc], min_context_tokens=1)
    assert sample["source"] == "web" and sample["entropy_model"] == "m"
    # named by the document, as rpt entropy names it: not by its line, which every file shares
    assert sample["doc_id"] == content_id({"text": "ab", "source": "web"}) and sample["id"] == f"{sample['doc_id']}@1"
    # a repeated document of the same input gets its own id: the first copy keeps the plain one
    samples = run([doc, dict(doc)], min_context_tokens=1)
    assert [s["doc_id"] for s in samples] == [sample["doc_id"], sample["doc_id"] + "-2"]
    assert "offsets" not in sample and "text" not in sample


def write(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"text": "ab", "offsets": [0, 1, 3], "entropy": [None, 1.0]}, "offsets do not fit the text"),
        ({"text": "ab", "offsets": [0, 2], "entropy": [None, 1.0]}, '"offsets" must have one more entry'),
        ({"text": "ab", "offsets": [0, 2, 1, 2], "entropy": [None, 1.0, 1.0]}, '"offsets" must be strictly increasing'),
        ({"text": "ab", "entropy": [None]}, 'missing field "offsets"'),
        (
            {"text": "ab", "offsets": [0, 1, 2], "entropy": [None, "x"]},
            '"entropy" must hold numbers of nats from 0 to 44.4, or null',
        ),
        ({"offsets": [0], "entropy": []}, 'missing field "text"'),
    ],
)
def test_bad_scored_documents(tmp_path, doc, reason):
    good = {"text": "ab", "offsets": [0, 1, 2], "entropy": [None, 1.0]}
    path = write(tmp_path / "scored.jsonl", [good, good, doc])
    out = tmp_path / "samples.jsonl"
    result = runner.invoke(app, ["filter", str(path), "-o", str(out), "--min-context-tokens", "1"])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}:3: {reason}")
    assert not out.exists()
    skipped = runner.invoke(app, ["filter", str(path), "--skip-bad", "--min-context-tokens", "1"])
    assert skipped.exit_code == 0 and len(skipped.stdout.splitlines()) == 2


def test_bad_options_exit_2(tmp_path):
    path = write(tmp_path / "s.jsonl", [])
    for args, message in [
        (["--split", "extreme"], "--split extreme"),
        (["--fraction", "0"], "--fraction"),
        (["--min", "2", "--max", "1"], "--max must not be below --min"),
    ]:
        result = runner.invoke(app, ["filter", str(path), *args])
        assert result.exit_code == 2 and message in result.output


def test_empty_input_gives_empty_output(tmp_path):
    path = write(tmp_path / "s.jsonl", [])
    result = runner.invoke(app, ["filter", str(path)])
    assert result.exit_code == 0 and result.stdout == ""


def test_filter_does_not_import_torch(tmp_path):
    path = write(tmp_path / "s.jsonl", [{"text": "ab", "offsets": [0, 1, 2], "entropy": [None, 1.0]}])
    code = (
        "import sys; from rpt_cli.cli import main; sys.argv = ['rpt', 'filter', sys.argv[1], "
        "'--min-context-tokens', '1', '-o', sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "o.jsonl")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o.jsonl").read_text().count("\n") == 1


def test_broken_pipe_ends_quietly(tmp_path):
    docs = [
        {"id": k, "text": "x" * 400, "offsets": list(range(401)), "entropy": [None] + [2.0] * 399} for k in range(50)
    ]
    path = write(tmp_path / "s.jsonl", docs)
    done = subprocess.run(
        f"set -o pipefail; '{sys.executable}' -m rpt_cli filter '{path}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
    )
    assert done.returncode == 0
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "Error" not in done.stderr


def test_entropy_into_filter_pipe(tiny_model_dir, tmp_path):
    corpus = write(
        tmp_path / "corpus.jsonl",
        [
            {"id": "a", "text": "Let $x$ be a real number such that $x^2 = 9$. Then $x = 3$ or $x = -3$."},
            {"id": "b", "text": "café 😀 日本語 and more words after the emoji to score."},
        ],
    )
    scored_run = runner.invoke(app, ["entropy", str(corpus), "--model", str(tiny_model_dir)])
    assert scored_run.exit_code == 0, scored_run.output
    piped = runner.invoke(app, ["filter", "--min", "1.0", "--min-context-tokens", "4"], input=scored_run.stdout)
    assert piped.exit_code == 0, piped.output
    samples = [orjson.loads(line) for line in piped.stdout.splitlines()]
    docs = {d["id"]: d for d in map(orjson.loads, scored_run.stdout.splitlines())}
    assert samples and {s["doc_id"] for s in samples} == {"a", "b"}
    for s in samples:
        doc = docs[s["doc_id"]]
        assert s["entropy"] == doc["entropy"][s["position"]] > 1.0
        assert doc["text"].startswith(s["context"] + s["target"][:1])
        assert s["entropy_model"] == tiny_model_dir.name
