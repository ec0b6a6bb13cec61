"""`rpt patterns` on huge completions: words counted without a string per word, and a completion
beyond any generation length refused as bad input (FILE:LINE, exit 2; --skip-bad skips it)."""

from __future__ import annotations

import json
import tracemalloc

from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.patterns import count_words

runner = CliRunner()


def test_words_are_counted_as_split_counts_them_across_chunk_edges():
    piece = "ab c\u3000d\te\x1cf  \n" + "x" * 70 + " "
    text = piece * (3 * (1 << 20) // len(piece))  # 3 MB: words straddle the megabyte edges
    for sample in (text, text.strip(), "x" * 2_500_000, " " * 1_500_000, "", "word"):
        assert count_words(sample) == len(sample.split())


def test_counting_the_words_of_a_long_thought_holds_no_string_per_word():
    text = "a b " * 5_000_000  # 20 MB, 10 million words
    tracemalloc.start()
    try:
        assert count_words(text) == 10_000_000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60_000_000, peak  # before: a list of 10 million strings, about 600 MB


def test_a_completion_beyond_any_generation_is_refused_in_one_line(tmp_path):
    path = tmp_path / "r.jsonl"
    huge = "maybe " * 200_000 + "x" * 10
    records = [{"id": 1, "completions": ["maybe"]}, {"id": 2, "completions": ["short", huge]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["patterns", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f'error: {path}:2: "completions[1]" holds {len(huge):,} characters, more than rpt patterns counts '
        "(1,000,000, far beyond any generation length)\n"
    )
    assert result.stdout == ""
    skipped = runner.invoke(app, ["patterns", str(path), "--skip-bad"])
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["records"] == 1
    assert "skipped 1 bad record(s)" in skipped.stderr
