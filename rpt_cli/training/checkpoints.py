"""Which checkpoints of a run are complete, and keeping only complete ones around.

A checkpoint folder counts only once it holds `rpt-complete.json`, written (atomically) after
every process has finished writing into it. A kill at any moment therefore leaves either a
complete checkpoint or a folder without the marker, which `--resume` ignores and removes.
Rotation (`--save-total-limit`) runs only after the new checkpoint is marked, so a kill while
saving can never leave a run without its newest complete checkpoint.
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


__all__ = [
    "CHECKPOINT_PREFIX",
    "FINAL",
    "MARKER",
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
