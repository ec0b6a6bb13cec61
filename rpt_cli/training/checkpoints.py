"""Which checkpoints of a run are complete, and keeping only complete ones around.

A checkpoint folder counts only once it holds `rpt-complete.json`, written (atomically) after
every process has finished writing into it. A kill at any moment therefore leaves either a
complete checkpoint or a folder without the marker, which `--resume` ignores and removes.
Rotation (`--save-total-limit`) runs only after the new checkpoint is marked, so a kill while
saving can never leave a run without its newest complete checkpoint. `RunCheckpoints` is the
trainers' side of it (every objective's trainer saves through it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from rpt_cli.files import write_text

CHECKPOINT_PREFIX = "checkpoint-"
MARKER = "rpt-complete.json"
FINAL = "final"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def write_atomic(path: Path, text: str) -> None:
    """Write a small file so that it is either absent or complete, even across a crash."""
    write_text(path, text)


def mark_complete(folder: Path, step: int) -> None:
    write_atomic(folder / MARKER, json.dumps({"step": step, "time": time.time()}) + "\n")


def completed_step(folder: Path) -> int | None:
    """The step a complete checkpoint (or final model) holds; None when it is not complete."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return int(data["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_folders(run_dir: Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` folder, complete or not, by step."""
    if not run_dir.is_dir():
        return []
    found = []
    for entry in run_dir.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    return [(step, path) for step, path in checkpoint_folders(run_dir) if completed_step(path) == step]


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint of a run, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Delete checkpoint folders without their marker (left by a kill while saving)."""
    removed = []
    for step, path in checkpoint_folders(run_dir):
        if completed_step(path) != step:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def rotate_checkpoints(run_dir: Path, limit: int | None, keep: Path) -> None:
    """Keep the newest `limit` complete checkpoints (all when None), never `keep`."""
    if limit is None:
        return
    done = complete_checkpoints(run_dir)
    for _, path in done[:-limit] if len(done) > limit else []:
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def replace_folder(tmp: Path, target: Path) -> None:
    """Move a finished folder into place, replacing an older one, without a moment where a
    reader finds `target` half written."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class RunCheckpoints:
    """What every objective's trainer does when it saves: a generation-ready config for the model,
    the objective's own state (`_save_extras`), then a completion marker once every process has
    written its part, then rotation (`rpt_save_total_limit`)."""

    rpt_save_total_limit: int | None = None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        # Trainer turns the KV cache off for training (use_cache=False in the config); the saved
        # model is for generation, where a cache-less config would make every token cost a full pass
        config = self.accelerator.unwrap_model(self.model).config
        before = getattr(config, "use_cache", None)
        config.use_cache = True
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            config.use_cache = before

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        # every process has written its shards (DeepSpeed, FSDP) before the checkpoint counts
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            folder = run_dir / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
            self._save_extras(folder)
            mark_complete(folder, self.state.global_step)
            rotate_checkpoints(run_dir, self.rpt_save_total_limit, keep=folder)
        self.accelerator.wait_for_everyone()

    def _save_extras(self, folder: Path) -> None:
        """State of the objective a checkpoint needs besides TRL's (main process; none here)."""


__all__ = [
    "CHECKPOINT_PREFIX",
    "FINAL",
    "MARKER",
    "RunCheckpoints",
    "checkpoint_folders",
    "complete_checkpoints",
    "completed_step",
    "latest_checkpoint",
    "mark_complete",
    "remove_incomplete",
    "replace_folder",
    "rotate_checkpoints",
    "write_atomic",
]
