"""Preparing a corpus the paper's way: documents built from several fields (`rpt entropy
--text-template`), a deterministic document-level hold-out (`rpt holdout`), and the notes of
`rpt train` and `rpt eval` when training and evaluation share a document."""

from __future__ import annotations

import hashlib
import json
import random

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.documents import TextTemplate, unescape
from rpt_cli.errors import UsageError
from tests.conftest import EXAMPLES

runner = CliRunner()

OMNI_LIKE = [
    {"problem": "Find $x$ if $2x = 6$.", "solution": "Divide by 2: $x = 3$.", "difficulty": 1.5},
    {"problem": "Let $n$ be odd.", "solution": "Then $n^2$ is odd, since $(2k+1)^2 = 4k^2+4k+1$.", "difficulty": 2},
]


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def read_jsonl(data) -> list[dict]:
    data = data.encode() if isinstance(data, str) else data
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


# -- --text-template ---------------------------------------------------------------------------


def test_a_template_fills_fields_with_escapes_and_literal_braces():
    template = TextTemplate.parse("{problem}\\n\\n{solution} {{x}} ({difficulty})")
    assert template.fields == ["problem", "solution", "difficulty"]
    built = template.fill(OMNI_LIKE[0])
    assert built == "Find $x$ if $2x = 6$.\n\nDivide by 2: $x = 3$. {x} (1.5)"
    assert unescape("a\\tb\\\\n\\q") == "a\tb\\n\\q"  # \\ is one backslash; unknown escapes stay


@pytest.mark.parametrize(
    "given, message", [("{a.b}", "is not a field name"), ("{a!r}", "is not a field name"), ("plain", "names no field")]
)
def test_a_template_that_names_no_plain_field_is_refused(given, message):
    with pytest.raises(UsageError, match=message):
        TextTemplate.parse(given)


def test_entropy_scores_the_built_text_and_its_offsets_index_it(tiny_model_dir, tmp_path):
    """Same offsets and entropies as the built text given directly, and the record carries it as
    `text`, so the offsets slice it byte for byte."""
    fields = write_jsonl(tmp_path / "fields.jsonl", OMNI_LIKE)
    template = "{problem}\\n\\n{solution}"
    built = [f"{d['problem']}\n\n{d['solution']}" for d in OMNI_LIKE]
    direct = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in built])
    model = ["--model", str(tiny_model_dir)]
    got = runner.invoke(app, ["entropy", str(fields), "--text-template", template, *model])
    want = runner.invoke(app, ["entropy", str(direct), *model])
    assert got.exit_code == 0 and want.exit_code == 0, got.output + want.output
    for doc, ref, text in zip(read_jsonl(got.stdout), read_jsonl(want.stdout), built):
        assert doc["text"] == text and doc["problem"] and doc["solution"]  # the fields stay too
        assert (doc["offsets"], doc["entropy"]) == (ref["offsets"], ref["entropy"])
        data = text.encode()
        assert b"".join(data[a:b] for a, b in zip(doc["offsets"], doc["offsets"][1:])) == data


def test_the_template_reads_a_datasets_file_alike(tiny_model_dir, tmp_path):
    import datasets

    datasets.Dataset.from_list(OMNI_LIKE).to_parquet(str(tmp_path / "omni.parquet"))
    result = runner.invoke(
        app,
        ["entropy", "--dataset", str(tmp_path / "omni.parquet"), "--text-template", "{problem}\\n\\n{solution}"]
        + ["--text-field", "document", "--model", str(tiny_model_dir)],
    )
    assert result.exit_code == 0, result.output
    out = read_jsonl(result.stdout)
    assert [d["document"] for d in out] == [f"{d['problem']}\n\n{d['solution']}" for d in OMNI_LIKE]
    from rpt_cli.holdout import content_id

    # the dataset's rows are named by their content (as the dataset types it: difficulty 2.0),
    # as the same rows exported to JSON Lines are
    rows = list(datasets.Dataset.from_parquet(str(tmp_path / "omni.parquet")))
    assert [d["id"] for d in out] == [content_id(row) for row in rows] and len(set(d["id"] for d in out)) == 2
    assert all(d["offsets"][-1] == len(d["document"].encode()) for d in out)


@pytest.mark.parametrize("where", ["jsonl", "dataset"])
def test_a_missing_field_is_one_line_naming_it(tiny_model_dir, tmp_path, where):
    records = [OMNI_LIKE[0], {"problem": "no solution here"}]
    if where == "jsonl":
        source = str(write_jsonl(tmp_path / "c.jsonl", records))
        args = [source]
    else:
        source = str(write_jsonl(tmp_path / "c.json", records))  # read through datasets' json builder
        args = ["--dataset", source]
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["entropy", *args, "--text-template", "{problem} {solution}", "-o", str(out), "--model", str(tiny_model_dir)],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == f'error: {source}:2: missing field "solution" (used by --text-template)\n'
    assert not out.exists()


# -- rpt holdout -----------------------------------------------------------------------------


def samples_of(docs: int, per_doc: int) -> list[dict]:
    return [{"id": f"doc{d}@{p}", "doc_id": f"doc{d}", "position": p} for d in range(docs) for p in range(per_doc)]


def holdout(tmp_path, records, *args, name="in.jsonl"):
    path = write_jsonl(tmp_path / name, records)
    train, held = tmp_path / f"{name}.train", tmp_path / f"{name}.held"
    result = runner.invoke(app, ["holdout", str(path), "-o", str(train), "--holdout-output", str(held), *args])
    assert result.exit_code == 0, result.output
    return read_jsonl(train.read_bytes()), read_jsonl(held.read_bytes()), result


def test_holdout_is_complete_disjoint_by_document_and_honours_the_count(tmp_path):
    records = samples_of(50, 3)
    train, held, result = holdout(tmp_path, records, "--documents", "7")
    assert len(train) + len(held) == len(records)
    assert sorted(r["id"] for r in train + held) == sorted(r["id"] for r in records)  # every record once
    held_docs, train_docs = {r["doc_id"] for r in held}, {r["doc_id"] for r in train}
    assert len(held_docs) == 7 and not held_docs & train_docs and len(held) == 21  # whole documents
    assert all(r["held_out"] is True for r in held) and not any("held_out" in r for r in train)
    assert "50 documents, 150 records -> held out 7 documents (21 records)" in result.stderr


def test_holdout_is_stable_under_reordering_and_depends_on_the_seed(tmp_path):
    records = samples_of(40, 2)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    _, held_a, _ = holdout(tmp_path, records, "--documents", "5", name="a.jsonl")
    _, held_b, _ = holdout(tmp_path, shuffled, "--documents", "5", name="b.jsonl")
    _, held_c, _ = holdout(tmp_path, records, "--documents", "5", "--seed", "9", name="c.jsonl")
    docs = [{r["doc_id"] for r in held} for held in (held_a, held_b, held_c)]
    assert docs[0] == docs[1] and docs[0] != docs[2]
    # a count is the smallest hashes: the 5 held out now are among the 8 held out with --documents 8
    _, held_more, _ = holdout(tmp_path, records, "--documents", "8", name="d.jsonl")
    assert docs[0] < {r["doc_id"] for r in held_more}


def test_holdout_fraction_keeps_a_document_on_its_side_whatever_else_is_in_the_file(tmp_path):
    records = samples_of(200, 1)
    _, held, _ = holdout(tmp_path, records, "--fraction", "0.25", name="all.jsonl")
    _, held_half, _ = holdout(tmp_path, records[:100], "--fraction", "0.25", name="half.jsonl")
    docs = {r["doc_id"] for r in held}
    assert {r["doc_id"] for r in held_half} == {d for d in docs if int(d[3:]) < 100}
    assert 30 <= len(docs) <= 70  # 50 expected; a binomial with sd 6


def test_holdout_of_documents_by_id_and_from_standard_input(tmp_path):
    corpus = [{"id": f"omni-{k}", "text": f"document {k}"} for k in range(20)]
    path = write_jsonl(tmp_path / "c.jsonl", corpus)
    held = tmp_path / "val.jsonl"
    piped = runner.invoke(app, ["holdout", "--documents", "4", "--holdout-output", str(held)], input=path.read_bytes())
    assert piped.exit_code == 0, piped.output
    train = read_jsonl(piped.stdout)
    assert len(train) == 16 and len(read_jsonl(held.read_bytes())) == 4
    _, from_file, _ = holdout(tmp_path, corpus, "--documents", "4", name="c2.jsonl")
    assert [r["id"] for r in from_file] == [r["id"] for r in read_jsonl(held.read_bytes())]


@pytest.mark.parametrize(
    "lines, args, message",
    [
        ([b'{"id": 1}', b'{"id": 2'], ["--documents", "1"], "in.jsonl:2: invalid JSON"),
        ([b'{"id": 1}', b'{"doc_id": [1]}'], ["--documents", "1"], 'in.jsonl:2: field "doc_id" must be a string'),
        ([b'{"id": 1}'], [], "give one of --documents N"),
        ([b'{"id": 1}'], ["--documents", "2", "--fraction", "0.1"], "give one of --documents N"),
        ([b'{"id": 1}'], ["--fraction", "1.5"], "--fraction must be between 0 and 1"),
        ([b'{"id": 1}'], ["--documents", "0"], "--documents must be at least 1"),
    ],
)
def test_holdout_bad_input_is_one_line_and_writes_neither_side(tmp_path, lines, args, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    result = runner.invoke(app, ["holdout", str(path), "-o", str(train), "--holdout-output", str(held), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not train.exists() and not held.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_holdout_needs_its_second_output(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": 1}])
    result = runner.invoke(app, ["holdout", str(path), "--documents", "1"])
    assert result.exit_code == 2 and "--holdout-output FILE is required" in result.stderr


# -- training and evaluation sharing a document --------------------------------------------------


def test_documents_of_samples_and_the_eval_note(tmp_path):
    """The run's documents.json and the note rpt eval prints come from one pair of functions."""
    from rpt_cli.holdout import RUN_DOCUMENTS, shared_documents_note, training_documents

    samples = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"id": "a@1", "doc_id": "a", "context": ""},
            {"id": "a@2", "doc_id": "a", "context": ""},
            {"id": "b@4", "context": ""},  # no doc_id: the id before its last @ names it
            {"id": 7, "doc_id": "c", "held_out": True, "context": ""},
            {"context": ""},  # nothing tells: not counted
        ],
    )
    found = training_documents(str(samples))
    assert (found.samples, len(found.digests), found.without_document, found.held_out) == (5, 3, 1, 1)
    assert "1 of 5 training samples come from held-out documents" in found.notes()[0]
    found.write(tmp_path)
    recorded = json.loads((tmp_path / RUN_DOCUMENTS).read_text())
    assert recorded["documents"] == 3 and len(recorded["document_digests"]) == 3
    # digests of the ids, not the ids: sha256 of the id as text, 16 hex digits
    assert recorded["document_digests"] == sorted(hashlib.sha256(d.encode()).hexdigest()[:16] for d in "abc")
    evaluated = [{"id": "a@9", "doc_id": "a"}, {"id": "b@1", "context": ""}, {"id": "z@1", "doc_id": "z"}]
    note = shared_documents_note(tmp_path, evaluated, "run/final")
    assert note.startswith("2 of 3 samples come from 2 document(s) that run/final was trained on (e.g. 'a'")
    assert shared_documents_note(tmp_path, [{"id": "z@1", "doc_id": "z"}], "run/final") is None
    assert shared_documents_note(tmp_path / "elsewhere", evaluated, "x") is None  # runs of older rpt


def test_train_records_its_documents_and_eval_notes_the_shared_ones(tiny_model_dir, tmp_path):
    """A real one-step rpt train run of the tiny model on samples of documents a and b (one marked
    held out), then rpt eval of the run on samples of a and z."""
    from tests.test_train import sample, tiny_args

    train_samples = [{**sample(i), "doc_id": "a" if i < 2 else "b"} for i in range(4)]
    train_samples[3]["held_out"] = True
    samples = write_jsonl(tmp_path / "train.jsonl", train_samples)
    out = tmp_path / "run"
    trained = runner.invoke(app, tiny_args(tiny_model_dir, samples, out, "--max-steps", "1", "--save-steps", "1"))
    assert trained.exit_code == 0, trained.output
    assert "train: note: 1 of 4 training samples come from held-out documents" in trained.stderr
    assert json.loads((out / "documents.json").read_text())["documents"] == 2
    evaluated = [{**sample(i, "e"), "doc_id": doc} for i, doc in enumerate(["a", "a", "z"])]
    eval_path = write_jsonl(tmp_path / "eval.jsonl", evaluated)
    result = runner.invoke(app, ["eval", str(eval_path), "--model", str(out), "--mode", "ntp"])
    assert result.exit_code == 0, result.output
    assert "eval: note: 2 of 3 samples come from 1 document(s) that run/final was trained on (e.g. 'a'" in result.stderr
    alone = write_jsonl(tmp_path / "alone.jsonl", evaluated[2:])
    clean = runner.invoke(app, ["eval", str(alone), "--model", str(out), "--mode", "ntp"])
    assert clean.exit_code == 0 and "trained on" not in clean.stderr


def test_documents_without_ids_keep_apart_through_the_data_recipe(tiny_model_dir, tmp_path):
    """docs/data.md's recipe on id-less documents (OmniMATH has no id): hold out, score each side,
    filter. Each document is named by its content, so the held-out samples share no document id
    with the training samples and `rpt eval`'s note stays silent; holding out on the scored
    documents of the whole file picks the same documents as holding out on the export."""
    from rpt_cli.holdout import shared_documents_note, training_documents

    problems = read_jsonl((EXAMPLES / "problems.jsonl").read_bytes())[:12]
    export = write_jsonl(tmp_path / "omni.jsonl", [{k: v for k, v in p.items() if k != "id"} for p in problems])
    template = ["--text-template", "{problem}\\n\\n{solution}", "-m", str(tiny_model_dir), "--backend", "hf"]

    def ok(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    val_docs, train_docs = tmp_path / "val_docs.jsonl", tmp_path / "train_docs.jsonl"
    ok("holdout", export, "--documents", 3, "--seed", 0, "--holdout-output", val_docs, "-o", train_docs)
    for side in ("train", "val"):
        ok("entropy", tmp_path / f"{side}_docs.jsonl", *template, "-o", tmp_path / f"{side}_scored.jsonl")
        ok("filter", tmp_path / f"{side}_scored.jsonl", "--per-doc", 2, "-o", tmp_path / f"{side}_samples.jsonl")
    train_samples = read_jsonl((tmp_path / "train_samples.jsonl").read_bytes())
    val_samples = read_jsonl((tmp_path / "val_samples.jsonl").read_bytes())
    assert len({s["doc_id"] for s in train_samples}) == 9 and len({s["doc_id"] for s in val_samples}) == 3
    assert not {s["doc_id"] for s in train_samples} & {s["doc_id"] for s in val_samples}
    run = tmp_path / "run"
    run.mkdir()
    training_documents(str(tmp_path / "train_samples.jsonl")).write(run)
    assert shared_documents_note(run, val_samples, "run") is None
    assert shared_documents_note(run, train_samples[:2], "run") is not None  # the note still works

    scored_all = tmp_path / "all_scored.jsonl"
    ok("entropy", export, *template, "-o", scored_all)
    held = tmp_path / "held.jsonl"
    ok("holdout", scored_all, "--documents", 3, "--seed", 0, "--holdout-output", held, "-o", tmp_path / "kept.jsonl")
    val_ids = {d["id"] for d in read_jsonl((tmp_path / "val_scored.jsonl").read_bytes())}
    assert {d["id"] for d in read_jsonl(held.read_bytes())} == val_ids
