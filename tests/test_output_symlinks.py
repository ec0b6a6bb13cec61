"""`-o` at a symlink whose target does not exist yet (conventions: a symlink keeps its link, its
target is written): `rpt train -o LINK` makes the target folder and trains into it."""

from __future__ import annotations

import os

from tests.test_train import invoke, sample, tiny_args, write_samples


def test_train_into_a_dangling_symlink_makes_its_target(tiny_model_dir, tmp_path):
    samples = write_samples(tmp_path / "samples.jsonl", [sample(i) for i in range(2)])
    link = tmp_path / "run"
    os.symlink("runs/first", link)  # relative, dangling: neither runs/ nor runs/first exists
    result = invoke(tiny_args(tiny_model_dir, samples, link, "--max-steps", "1"))
    assert result.exit_code == 0, result.output  # before: FileExistsError, exit 1
    assert link.is_symlink() and os.readlink(link) == "runs/first"
    assert (tmp_path / "runs" / "first" / "final").is_dir() and (tmp_path / "runs" / "first" / "config.yaml").is_file()
