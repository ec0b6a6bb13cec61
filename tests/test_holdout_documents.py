"""One rule for a sample's document, shared by `rpt holdout` and by `rpt train` / `rpt eval`
(rpt_cli.holdout.document_of): samples whose ids are `DOC@POS` and carry no `doc_id` are split
by document, and the training side's documents.json shares none with the held-out side."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.holdout import content_id, document_digest, document_of, shared_documents_note, training_documents
from tests.test_corpus import read_jsonl, write_jsonl

runner = CliRunner()


def samples_without_doc_id(docs: int, per_doc: int) -> list[dict]:
    return [
        {"id": f"doc{d}@{p}", "position": p, "context": f"text of doc{d} up to {p}", "target": " x"}
        for d in range(docs)
        for p in range(per_doc)
    ]


def test_holdout_splits_doc_at_pos_samples_by_document_as_train_and_eval_read_them(tmp_path):
    records = samples_without_doc_id(8, 3)
    path = write_jsonl(tmp_path / "samples.jsonl", records)
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    args = ["holdout", str(path), "-o", str(train), "--holdout-output", str(held), "--fraction", "0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 documents, 24 records" in result.stderr  # before: 24 documents
    train_side, held_side = read_jsonl(train.read_bytes()), read_jsonl(held.read_bytes())
    held_docs = {r["id"].split("@")[0] for r in held_side}
    train_docs = {r["id"].split("@")[0] for r in train_side}
    assert held_docs and train_docs and not held_docs & train_docs  # before: 6 of 8 documents on both sides
    # what rpt train records of its samples, and what rpt eval checks against it
    trained = training_documents(str(train))
    assert trained.digests == {document_digest(d) for d in train_docs} and trained.without_document == 0
    (tmp_path / "run").mkdir()
    trained.write(tmp_path / "run")
    assert shared_documents_note(tmp_path / "run", held_side, "run") is None
    assert "samples come from" in shared_documents_note(tmp_path / "run", train_side, "run")


def test_the_rule_of_a_records_document():
    assert document_of({"id": "a@1", "doc_id": "b", "context": ""}) == "b"
    assert document_of({"id": "a@b@7", "context": ""}) == "a@b"  # the last @ ends the document
    assert document_of({"id": "user@example.org", "text": "a document"}) == "user@example.org"  # no context
    assert document_of({"id": 3, "context": ""}) == 3
    assert document_of({"text": "t"}) == content_id({"text": "t"})  # a document without id: its content id
    assert document_of({"context": ""}, "id", 12) == 12 and document_of({"context": ""}) is None


def test_holdout_refuses_a_null_doc_id(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "a@1", "context": ""}) + "\n" + json.dumps({"id": "b@1", "doc_id": None}) + "\n")
    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    args = ["holdout", str(path), "-o", str(train), "--holdout-output", str(held), "--documents", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f'error: {path}:2: field "doc_id" is null; give the document\'s id or leave the field out\n'
    assert not train.exists() and not held.exists()


def test_an_unreadable_documents_json_says_the_check_could_not_be_made(tmp_path):
    samples = samples_without_doc_id(1, 1)
    assert shared_documents_note(tmp_path, samples, "run") is None  # no documents.json: a run of older rpt
    (tmp_path / "documents.json").write_text('{"document_digests": [')  # torn
    note = shared_documents_note(tmp_path, samples, "run")
    assert note == (
        "cannot check whether the samples share documents with what run was trained on: "
        f"{tmp_path / 'documents.json'} is unreadable (JSONDecodeError)"
    )  # before: None, the check skipped in silence
    (tmp_path / "documents.json").unlink()
    (tmp_path / "documents.json").mkdir()
    assert "is unreadable (Is a directory)" in shared_documents_note(tmp_path, samples, "run")
