"""`rpt train --config FILE.yaml`: an option given twice in the file (the same key, two spellings,
or its old and new names) is refused with the file and line, as the command line refuses it,
instead of YAML keeping the last value silently."""

from __future__ import annotations

import pytest

from tests.test_train import invoke, sample, write_samples


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            ["learning_rate: 1e-6", "seed: 3", "learning_rate: 0.5"],
            "c.yaml:3: 'learning_rate' repeats 'learning_rate' of line 1",
        ),
        (
            ["max-new-tokens: 8", "seed: 3", "max_new_tokens: 9"],
            "c.yaml:3: 'max_new_tokens' sets the same option as 'max-new-tokens' of line 1",
        ),
        (
            ["num_completions: 4", "num_generations: 2"],
            "c.yaml:2: 'num_generations' sets the same option as 'num_completions' of line 1",
        ),
    ],
)
def test_an_option_given_twice_in_the_settings_file_is_refused(tmp_path, lines, message):
    config = tmp_path / "c.yaml"
    config.write_text("\n".join(lines) + "\n")
    samples = write_samples(tmp_path / "samples.jsonl", [sample(0)])
    args = ["train", str(samples), "-o", str(tmp_path / "run"), "--model", "/no/such/model", "--config", str(config)]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {tmp_path}/{message}: give each option once\n"
    assert not (tmp_path / "run").exists()
