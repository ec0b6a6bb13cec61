"""`rpt patterns`: keyword counts of the paper's reasoning patterns (Section 4.5, Figure 6).

Hand-made records whose counts are worked out by hand in each test (word boundaries, case,
multi-word keywords, the thought before `</think>`, share against rate, nested splits), custom
keyword files, bad input, the plot, and one run on real `rpt rollout` output of the tiny model."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.pattern_keywords import KEYWORDS
from rpt_cli.patterns import KeywordSet, count_words, thought_of

runner = CliRunner()

PAPER_PATTERNS = ["transition", "reflection", "breakdown", "hypothesis", "divergent thinking", "deduction"]


def write_jsonl(path, records):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def results_of(stdout: str) -> dict[str, dict]:
    return {r["model"]: r for r in (json.loads(line) for line in stdout.splitlines() if line.strip())}


def entry(completions, share, count, rate) -> dict:
    return {"completions": completions, "share": share, "count": count, "per_1k_words": rate}


def keyword_file(tmp_path, mapping, name="k.json"):
    path = tmp_path / name
    path.write_text(json.dumps(mapping), encoding="utf-8")
    return path


# Table 9 of the paper (Appendix E), typed out here: the test is the specification
TABLE_9 = {
    "transition": ["alternatively", "think differently"],
    "reflection": ["wait", "initial answer", "original answer", "looking back", "thought process"],
    "breakdown": ["break down", "break this down"],
    "hypothesis": ["probably", "something like"],
    "divergent thinking": [
        "etc.",
        "or something",
        "either",
        "sometimes it refers",
        "otherwise",
        "exploring",
        "options",
    ],
    "deduction": ["summarize", "conclusion", "conclude", "finally", "logically", "consequently"],
}


def test_the_builtin_patterns_are_the_papers_six_with_table_9s_keywords():
    assert list(KEYWORDS) == PAPER_PATTERNS
    assert KEYWORDS == TABLE_9
    listed = runner.invoke(app, ["patterns", "--list-keywords"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == KEYWORDS


def test_the_papers_measure_share_of_responses_and_its_relative_difference(tmp_path):
    """Figure 6: the share of responses containing a pattern's keywords, per model; the paper's
    "+161.8 % hypothesis" is the relative difference of two such shares (here 89 % against 34 %,
    and 53 % against 42 % for deduction's +26.2 %). The whole response counts, the answer after
    </think> too; the rate per 1,000 words changes otherwise."""

    def responses(model, hypothesis, deduction, filler):
        out = []
        for k in range(100):
            thought = "probably so" if k < hypothesis else "a guess"
            after = " finally x" if k < deduction else " x"
            out.append(
                {"id": k, "rollout": {"model": model}, "completions": [f"<think>{thought}{filler}</think>{after}"]}
            )
        return out

    base = write_jsonl(tmp_path / "base.jsonl", responses("base", 34, 42, " " + "word " * 8))
    rpt = write_jsonl(tmp_path / "rpt.jsonl", responses("rpt", 89, 53, ""))
    result = runner.invoke(app, ["patterns", str(base), str(rpt)])
    assert result.exit_code == 0, result.output
    got = results_of(result.stdout)
    assert (
        got["base"]["patterns"]["hypothesis"]["share"] == 0.34 and got["rpt"]["patterns"]["hypothesis"]["share"] == 0.89
    )
    assert got["rpt"]["counted"] == "response"
    change = got["rpt"]["change"]
    assert round(100 * change["hypothesis"], 1) == 161.8 and round(100 * change["deduction"], 1) == 26.2
    assert change["breakdown"] is None  # neither uses it: no relative difference to tell
    # the rates per 1,000 words tell another story (the base model's responses are longer)
    assert got["rpt"]["change_per_1k_words"]["hypothesis"] != change["hypothesis"]
    assert "+161.8%" in result.stderr
    # only the thought: "finally" after </think> no longer counts
    thought_only = runner.invoke(app, ["patterns", str(base), str(rpt), "--count", "thought"])
    assert results_of(thought_only.stdout)["rpt"]["patterns"]["deduction"]["share"] == 0.0
    bad = runner.invoke(app, ["patterns", str(base), "--count", "answer"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --count answer: choose one of response, thought"


def test_keywords_match_whole_words_in_any_case_and_phrases_across_whitespace():
    words = KeywordSet(
        {"w": ("wait",), "h": ("on the other hand",), "a": ("let's try",), "c": ("first,",), "d": ("double-check",)}
    )
    # wait: "await" and "waiting" are other words; "Wait" and "WAIT." count -> 2
    # on the other hand: across a newline and three spaces counts; "handle" does not -> 1
    # let's try: a curly apostrophe counts too -> 2
    # first,: only with its comma -> 1; double-check: "double-checked" is another word -> 1
    text = (
        "await waiting Wait WAIT. on the\nother   hand; on the other handle. "
        "Let's try; let’s try. first, First then. double-check double-checked"
    )
    assert words.count(text) == {"w": 2, "h": 1, "a": 2, "c": 1, "d": 1}


def test_the_longest_keyword_at_a_place_counts_once():
    words = KeywordSet({"r": ("double-check", "let me double-check")})
    assert words.count("Let me double-check. double-check") == {"r": 2}


def test_the_thought_is_the_text_before_the_last_think_end():
    assert thought_of("<think>maybe</think> maybe \\boxed{maybe}") == (" maybe", True)
    assert thought_of("maybe </think> maybe </think> \\boxed{x}") == ("maybe   maybe ", True)
    assert thought_of("maybe maybe") == ("maybe maybe", False)  # cut at the length limit: all of it
    # a conversational completion: the assistant's reasoning is the thought
    assert thought_of([{"role": "assistant", "reasoning_content": "perhaps", "content": "\\boxed{1}"}]) == (
        " perhaps",
        True,
    )
    assert count_words(" maybe\n\nit is  x.") == 4


def test_share_of_completions_against_rate_per_thousand_words(tmp_path):
    # completion 1: 4 words, "maybe" 3 times; completion 2: 4 words, none; completion 3: the
    # answer after </think> does not count: 2 words of thought ("suppose it"), 1 match.
    # hypothesis: used in 2 of 3 completions; 4 matches in 10 words = 400 per 1,000 words
    # deduction ("thus"): only in the answer part -> 0
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"id": 1, "completions": ["maybe MAYBE maybe x", "nothing here at all"], "rollout": {"model": "m"}},
            {"id": 2, "completions": ["<think>suppose it</think> thus maybe \\boxed{x}"], "rollout": {"model": "m"}},
        ],
    )
    keywords = keyword_file(tmp_path, {"hypothesis": ["maybe", "suppose"], "deduction": ["thus"]})
    result = runner.invoke(app, ["patterns", str(path), "--keywords", str(keywords), "--count", "thought"])
    assert result.exit_code == 0, result.output
    m = results_of(result.stdout)["m"]
    assert (m["records"], m["completions"], m["words"], m["thoughts_closed"]) == (2, 3, 10, 1)
    assert m["patterns"]["hypothesis"] == entry(2, round(2 / 3, 6), 4, 400.0)
    assert m["patterns"]["deduction"] == entry(0, 0.0, 0, 0.0)
    assert m["keywords"] == str(keywords) and m["counted"] == "thought" and m["splits"] == {}


def test_splits_are_nested_as_in_rpt_eval(tmp_path):
    # hard: in easy, medium and hard; easy: in easy; none and no split: in no split
    records = [
        {"id": "a", "split": "hard", "completions": ["maybe", "x y"]},
        {"id": "b", "split": "easy", "completions": ["maybe maybe z"]},
        {"id": "c", "split": "none", "completions": ["maybe"]},
        {"id": "d", "completions": ["w"]},
    ]
    path = write_jsonl(tmp_path / "run.jsonl", records)
    keywords = keyword_file(tmp_path, {"hypothesis": ["maybe"]})
    result = runner.invoke(app, ["patterns", str(path), "--keywords", str(keywords)])
    assert result.exit_code == 0, result.output
    m = results_of(result.stdout)["run"]  # no model named: the file's name
    assert (m["records"], m["completions"], m["words"], m["patterns"]["hypothesis"]["count"]) == (4, 5, 8, 4)
    easy, medium, hard = (m["splits"][s] for s in ("easy", "medium", "hard"))
    assert (easy["records"], easy["completions"], easy["words"]) == (2, 3, 6)
    assert easy["patterns"]["hypothesis"] == entry(2, round(2 / 3, 6), 3, 500.0)
    assert medium == hard
    assert (hard["records"], hard["completions"], hard["words"]) == (1, 2, 3)
    assert hard["patterns"]["hypothesis"] == entry(1, 0.5, 1, round(1000 / 3, 6))


def test_models_are_named_by_their_records_or_by_name_and_compared_with_the_first(tmp_path):
    base = write_jsonl(tmp_path / "base.jsonl", [{"id": 1, "rollout": {"model": "r1"}, "completions": ["maybe a b c"]}])
    details = write_jsonl(
        tmp_path / "details.jsonl",
        [
            {"id": 1, "model": "run/final", "mode": "ntp", "prediction": " x"},  # ntp rows: no completions
            {"id": 1, "model": "run/final", "mode": "reasoning", "completions": ["maybe maybe", "a b"]},
            {"id": 1, "model": "run/final", "mode": "gain", "completions": ["thus maybe"]},  # RLP thoughts
        ],
    )
    keywords = keyword_file(tmp_path, {"hypothesis": ["maybe"], "deduction": ["thus"]})
    result = runner.invoke(app, ["patterns", str(base), str(details), "--keywords", str(keywords)])
    assert result.exit_code == 0, result.output
    got = results_of(result.stdout)
    assert list(got) == ["r1", "run/final", "run/final (gain)"]  # the modes of one model apart
    assert (got["run/final"]["completions"], got["run/final (gain)"]["completions"]) == (2, 1)
    # hypothesis in 1 of 1 responses of r1, in 1 of 2 of run/final: -50 %; rates: r1 1 match in 4
    # words = 250, run/final 2 in 4 = 500, +100 %; deduction 0 in both: no change to tell
    assert got["run/final"]["baseline"] == "r1" and got["run/final"]["change"] == {
        "hypothesis": -0.5,
        "deduction": None,
    }
    assert got["run/final"]["change_per_1k_words"] == {"hypothesis": 1.0, "deduction": None}
    assert "change" not in got["r1"]
    assert "left out 1 ntp row(s)" in result.stderr
    named = runner.invoke(app, ["patterns", str(base), str(details), "--name", "base", "--name", "rpt"])
    assert list(results_of(named.stdout)) == ["base", "rpt"]  # --name takes the whole file
    too_many = runner.invoke(app, ["patterns", str(base), "--name", "a", "--name", "b"])
    assert too_many.exit_code == 2 and "one name per INPUT" in too_many.stderr


def test_custom_keywords_in_yaml(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "completions": ["Aha, so the answer aha"]}])
    yaml_file = tmp_path / "k.yaml"
    yaml_file.write_text("insight:\n  - aha\nguessing:\n  - so the\n", encoding="utf-8")
    result = runner.invoke(app, ["patterns", str(path), "--keywords", str(yaml_file)])
    assert result.exit_code == 0, result.output
    r = results_of(result.stdout)["r"]
    assert {k: v["count"] for k, v in r["patterns"].items()} == {"insight": 2, "guessing": 1}


@pytest.mark.parametrize(
    "content, name, message",
    [
        ('{"a": ["x"],\n "b": [}', "k.json", "k.json:2: invalid JSON"),
        ('["maybe"]', "k.json", "k.json: expected an object of patterns"),
        ('{"a": []}', "k.json", 'k.json: pattern "a" must have a non-empty list of keywords'),
        ('{"a": ["x", 3]}', "k.json", 'k.json: pattern "a": keyword 3 must be a non-empty string'),
        ("a: [x\nb: y\n", "k.yaml", "k.yaml:2: invalid YAML"),
        ("", "k.yaml", "k.yaml: expected an object of patterns"),
    ],
)
def test_a_bad_keyword_file_is_one_line(tmp_path, content, name, message):
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "completions": ["x"]}])
    (tmp_path / name).write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["patterns", str(path), "--keywords", str(tmp_path / name)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"id": 2, "context": "x"}', 'r.jsonl:2: missing field "completions"'),
        (b'{"id": 2, "completions": "x"}', 'r.jsonl:2: field "completions" must be a list'),
        (b'{"id": 2, "completions": ["x"], "split": 3}', 'r.jsonl:2: field "split" must be a string'),
        (b'{"id": 2, ', "r.jsonl:2: invalid JSON"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, line, message):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": 1, "completions": ["maybe"]}\n' + line + b"\n")
    plot = tmp_path / "p.png"
    result = runner.invoke(app, ["patterns", str(path), "-o", str(plot)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == "" and not plot.exists() and list(tmp_path.glob(".p.png.*")) == []
    skipped = runner.invoke(app, ["patterns", str(path), "--skip-bad"])
    assert skipped.exit_code == 0 and results_of(skipped.stdout)["r"]["records"] == 1
    assert "skipped 1 bad record(s)" in skipped.stderr


def test_the_plot_is_a_png_and_a_bad_plot_path_stops_first(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "completions": ["maybe therefore wait"]}])
    plot = tmp_path / "p.png"
    result = runner.invoke(app, ["patterns", str(path), "-o", str(plot), "--title", "T"])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = runner.invoke(app, ["patterns", str(path), "-o", str(tmp_path / "no" / "p.png")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr and missing.stdout == ""


def test_real_rollouts_of_the_tiny_model(tiny_model_dir, tmp_path):
    """`rpt rollout` output counted by `rpt patterns` agrees with a count made here another way:
    the thought split into lower-case \\w+ words, single-word keywords compared word by word."""
    context = "Let $x$ be a real number such that"
    samples = [{"id": f"d@{k}", "context": f"{context} {k}", "split": "hard"} for k in range(4)]
    samples_path = write_jsonl(tmp_path / "s.jsonl", samples)
    rolled = runner.invoke(
        app,
        ["rollout", str(samples_path), "--model", str(tiny_model_dir), "-G", "3", "--max-new-tokens", "24"]
        + ["--seed", "1", "-o", str(tmp_path / "r.jsonl")],
    )
    assert rolled.exit_code == 0, rolled.output
    rollouts = [orjson.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]
    thoughts = [thought_of(c)[0] for r in rollouts for c in r["completions"]]
    vocabulary = sorted({w for t in thoughts for w in re.findall(r"\w+", t.lower()) if w.isalpha()})
    assert vocabulary, "the tiny model wrote no words at all"
    chosen = vocabulary[:5]
    keywords = keyword_file(tmp_path, {w: [w] for w in chosen})
    args = [str(tmp_path / "r.jsonl"), "--keywords", str(keywords), "-o", str(tmp_path / "p.png"), "--count", "thought"]
    result = runner.invoke(app, ["patterns", *args])
    assert result.exit_code == 0, result.output
    (got,) = results_of(result.stdout).values()
    assert got["model"] == tiny_model_dir.name and got["completions"] == 12
    assert got["words"] == sum(len(t.split()) for t in thoughts)
    for word in chosen:
        per_thought = [re.findall(r"\w+", t.lower()).count(word) for t in thoughts]
        assert got["patterns"][word]["count"] == sum(per_thought)
        assert got["patterns"][word]["completions"] == sum(n > 0 for n in per_thought)
    assert got["splits"]["hard"]["completions"] == 12 and (tmp_path / "p.png").stat().st_size > 0
