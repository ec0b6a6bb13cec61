"""Paired comparisons in `rpt eval` (rpt_cli/evaluate/paired.py): the statistic against cases
computed by hand, pairing by id and split, and real evaluations of two tiny models."""

from __future__ import annotations

import itertools
import math

import pytest
from typer.testing import CliRunner

from rpt_cli.cli import app
from rpt_cli.evaluate import add_paired, bootstrap_interval, paired_difference, sign_test
from rpt_cli.resume import id_key
from tests.test_eval import corpus_samples, read_jsonl, write_jsonl
from tests.test_scaling import perturbed_model

runner = CliRunner()


# -- the statistic --------------------------------------------------------------------------------------
def test_sign_test_matches_the_binomial_tail_by_hand():
    # 7 up, 1 down, 3 ties: m = 8, 2 · P(X ≤ 1) = 2 · (1 + 8) / 256
    assert sign_test([1] * 7 + [-1] + [0] * 3) == pytest.approx(2 * 9 / 256)
    assert sign_test([0.5, -0.25, 0.0]) == 1.0  # 1 up, 1 down: 2 · P(X ≤ 1 | m = 2) = 2 · 3/4, capped
    assert sign_test([0, 0]) == 1.0  # no sample differs
    assert sign_test([1] * 15) == pytest.approx(2 / 2**15)


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    # differences (0, 0, 0, 1): a resampled mean is (ones drawn)/4, ones ~ Binomial(4, 1/4), so by
    # hand P(mean ≤ 0) = 81/256 ≈ 0.316 > 2.5 % and P(mean ≤ 1/2) = 243/256 ≈ 0.949 < 97.5 %
    # ≤ P(mean ≤ 3/4) = 255/256: the exact 95 % percentile interval is [0, 3/4]
    differences = [0.0, 0.0, 0.0, 1.0]
    exact = sorted(sum(pick) / 4 for pick in itertools.product(differences, repeat=4))
    assert exact[math.ceil(0.025 * 256) - 1] == 0.0 and exact[math.ceil(0.975 * 256) - 1] == 0.75
    assert bootstrap_interval(differences, seed=0) == (0.0, 0.75)
    assert bootstrap_interval(differences, seed=7) == (0.0, 0.75)


def test_bootstrap_interval_of_many_differences_matches_the_normal_interval():
    # 400 differences, 120 of +1, 60 of −1, 220 of 0: mean 0.15, sd √(0.45 − 0.0225) = 0.6538;
    # the normal 95 % interval is 0.15 ± 1.96 · 0.6538/√400 = [0.0859, 0.2141]
    differences = [1.0] * 120 + [-1.0] * 60 + [0.0] * 220
    low, high = bootstrap_interval(differences, seed=3)
    assert low == pytest.approx(0.0859, abs=0.006) and high == pytest.approx(0.2141, abs=0.006)


def test_a_consistent_gain_gives_an_interval_that_excludes_zero():
    baseline = [0.0] * 20
    other = [1.0] * 15 + [0.0] * 5
    result = paired_difference(baseline, other, seed=0)
    assert result["n"] == 20 and result["difference"] == 0.75
    low, high = result["ci95"]
    assert 0 < low < 0.75 < high <= 1
    assert result["p_value"] == pytest.approx(2 / 2**15)
    # the same gain on unpaired samples of this size would not be told from chance this way: the
    # paired test sees 15 of 15 differing samples go one way
    assert paired_difference(other, baseline, seed=0)["ci95"] == pytest.approx([-high, -low])


def test_identical_scores_give_exactly_zero():
    scores = [0.0, 1.0, 0.5, 1.0, 0.0]
    assert paired_difference(scores, scores, seed=0) == {"n": 5, "difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    assert paired_difference([], [], seed=0) == {"n": 0, "difference": None, "ci95": None, "p_value": None}
    assert paired_difference([0.0], [1.0], seed=0)["ci95"] is None  # one pair has no spread to resample


def test_the_same_seed_gives_the_same_interval():
    differences = [((7 * i) % 5 - 2) / 2 for i in range(37)]
    assert bootstrap_interval(differences, seed=11) == bootstrap_interval(differences, seed=11)


# -- pairing ---------------------------------------------------------------------------------------------
def report(model: str, mode: str = "ntp", answer: str | None = None) -> dict:
    return {"model": model, "mode": mode, "answer": answer, "paired": None, "splits": {"easy": {}, "hard": {}}}


def test_samples_pair_by_id_within_a_mode_and_split():
    base = {id_key(1): ("easy", 1.0), id_key(2): ("hard", 0.0), id_key(3): ("hard", 0.0), id_key("4"): ("none", 0.0)}
    # sample 2 was not scored by the later model (e.g. skipped with --skip-bad); id 4 is "4" there
    # but 4 here: ids are type-exact, so it does not pair either
    later = {id_key(1): ("easy", 1.0), id_key(3): ("hard", 1.0), id_key(4): ("none", 1.0)}
    reports = [report("a"), report("a", "reasoning", "boxed"), report("b"), report("b", "reasoning", "direct")]
    add_paired([(reports[0], base), (reports[1], base), (reports[2], later), (reports[3], later)], seed=0)
    assert reports[0]["paired"] is None and reports[1]["paired"] is None
    # b's direct guesses have no baseline: a was evaluated in the boxed format
    assert reports[3]["paired"] is None
    paired = reports[2]["paired"]
    assert paired["baseline"] == "a" and paired["n"] == 2 and paired["difference"] == 0.5
    # nested splits: the hard sample is easy too
    assert reports[2]["splits"]["easy"]["paired"]["n"] == 2
    assert reports[2]["splits"]["hard"]["paired"] == {"n": 1, "difference": 1.0, "ci95": None, "p_value": 1.0}


# -- real evaluations ---------------------------------------------------------------------------------
def test_the_same_model_twice_differs_by_exactly_zero(tiny_model_dir, tmp_path):
    from rpt_cli.models import load_tokenizer

    samples = write_jsonl(tmp_path / "samples.jsonl", corpus_samples(load_tokenizer(str(tiny_model_dir)), per_doc=3))
    model = str(tiny_model_dir)
    args = ["eval", str(samples), "-m", model, "-m", model, "--mode", "ntp", "--mode", "reasoning", "--mode", "gain"]
    args += ["--answer", "direct", "-G", "2", "--temperature", "1.0", "--max-new-tokens", "2", "--backend", "hf"]
    args += ["--limit", "12"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    reports = read_jsonl(result.stdout)
    assert [r["mode"] for r in reports] == ["ntp", "reasoning", "gain"] * 2
    assert all(r["paired"] is None for r in reports[:3])
    for later in reports[3:]:
        paired = later["paired"]
        # gain mode pairs the samples whose next token could be placed (info_gain_n)
        assert paired["baseline"] == tiny_model_dir.name and paired["n"] == later.get("info_gain_n", later["n"]) > 2
        assert paired["difference"] == 0.0 and paired["ci95"] == [0.0, 0.0] and paired["p_value"] == 1.0
        for entry in later["splits"].values():
            assert entry["paired"]["n"] == entry.get("info_gain_n", entry["n"])
            assert entry["paired"]["difference"] in (0.0, None)
    assert "Paired difference from the first model" in result.stderr
    assert "+0.0" in result.stderr and "+0.000" in result.stderr  # percentage points; nats


def test_a_model_that_gets_more_right_has_an_interval_above_zero(tiny_model_dir, tmp_path):
    """Samples whose targets are a perturbed copy's own guesses: the copy gets them right, the
    tiny model mostly not; the paired interval must lie above 0 and match the details."""
    from rpt_cli.models import load_tokenizer

    better = perturbed_model(tiny_model_dir, tmp_path / "better", seed=5)
    base = corpus_samples(load_tokenizer(str(tiny_model_dir)), per_doc=3)
    first = tmp_path / "first.jsonl"
    base_path = write_jsonl(tmp_path / "base.jsonl", base)
    guessed = runner.invoke(app, ["eval", str(base_path), "-m", str(better), "--details", str(first)])
    assert guessed.exit_code == 0, guessed.output
    guesses = {row["id"]: row["prediction"] for row in read_jsonl(first.read_bytes())}
    samples = []
    for sample in base:
        guess = guesses[sample["id"]]
        if guess:  # the copy's guess, then more text: right for it by Eq. 3
            size = len(guess.encode())
            sample = {**sample, "target": guess + "~end", "boundaries": [size, size + 4]}
        samples.append(sample)
    path = write_jsonl(tmp_path / "samples.jsonl", samples)
    details = tmp_path / "details.jsonl"
    args = ["eval", str(path), "-m", str(tiny_model_dir), "-m", str(better), "--details", str(details)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    baseline, later = read_jsonl(result.stdout)
    rows = read_jsonl(details.read_bytes())
    correct = {(row["model"], row["id"]): float(row["correct"]) for row in rows}
    differences = [correct[("better", s["id"])] - correct[(tiny_model_dir.name, s["id"])] for s in samples]
    paired = later["paired"]
    assert paired["n"] == len(samples)
    assert paired["difference"] == pytest.approx(sum(differences) / len(differences))
    assert paired["difference"] == pytest.approx(later["accuracy"] - baseline["accuracy"])
    assert 0 < paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert paired["p_value"] == pytest.approx(sign_test(differences)) and paired["p_value"] < 0.05
    # the same numbers on a rerun (seeded)
    again = runner.invoke(app, args)
    assert read_jsonl(again.stdout)[1]["paired"] == paired
