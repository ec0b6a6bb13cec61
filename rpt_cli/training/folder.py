"""The run folder of `rpt train` before a run starts: what the folder holds (nothing, a run to go
on with, a run that never made a step, something else) and what a new or resumed run may do with
it; and how a run records its settings there (config.yaml with absolute paths, its digest in
run.json, so an edited file is refused rather than trusted).

Reading the folder happens under its lock (lock.py), so two writers never both find it free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rpt_cli.errors import InputError, UsageError
from rpt_cli.training.checkpoints import FINAL, completed_step, latest_checkpoint
from rpt_cli.training.config import TrainConfig, load_saved_config, resume_conflicts
from rpt_cli.training.data import Samples
from rpt_cli.training.lock import LOCK_FILE
from rpt_cli.training.log import METRICS_FILE

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"


def _local_path(value: str | None) -> str | None:
    """`value` as an absolute path when it names something on this machine, else None (a hub
    id, the built-in model's name, standard input)."""
    from rpt_cli.models import BUILTIN_ALIASES

    if not value or value == "-" or value.lower() in BUILTIN_ALIASES:
        return None
    path = Path(value).expanduser()
    return os.path.abspath(path) if path.exists() else None


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    """The settings with `samples`, `output` and a local `model` as absolute paths, as a run's
    config.yaml records them: they mean the same from any working directory."""
    changes = {key: _local_path(getattr(config, key)) for key in ("samples", "model")}
    changes["output"] = os.path.abspath(Path(config.output).expanduser()) if config.output else None
    return dataclasses.replace(config, **{key: value for key, value in changes.items() if value is not None})


@dataclass
class OutputPlan:
    folder: Path
    resume_from: Path | None = None  # the newest complete checkpoint
    resume_step: int = 0
    resuming: bool = False  # an existing run goes on (from a checkpoint or from step 0)
    finished: bool = False  # the run already holds a final model at max_steps
    restarted: bool = False  # the folder held a run that ended before its first step: started afresh


def output_folder(config: TrainConfig) -> Path:
    folder = Path(config.output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {config.output}: exists and is not a folder")
    return folder


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _logged_steps(folder: Path) -> bool:
    """Whether metrics.jsonl holds a step (a torn line is no step)."""
    try:
        lines = (folder / METRICS_FILE).read_bytes().splitlines()
    except OSError:
        return False
    for raw in lines:
        try:
            if isinstance(json.loads(raw).get("step"), int):
                return True
        except (ValueError, AttributeError):
            continue
    return False


def never_stepped(folder: Path) -> bool:
    """A run that ended (a crash, a kill) before its first step: nothing in it is worth keeping,
    so it does not stand in the way of a new run."""
    return latest_checkpoint(folder) is None and completed_step(folder / FINAL) is None and not _logged_steps(folder)


def plan_output(config: TrainConfig, samples: Samples, *, resume: bool) -> OutputPlan:
    """Decide what the output folder means for this run, refusing what would mix two runs."""
    folder = output_folder(config)
    if not folder.is_dir() or not any(entry.name != LOCK_FILE for entry in folder.iterdir()):
        return OutputPlan(folder)
    holds_run = (folder / CONFIG_FILE).is_file() and (folder / RUN_FILE).is_file()
    if not holds_run:
        raise UsageError(
            f"-o {config.output}: the folder is not empty and holds no rpt train run; choose a new or empty folder"
        )
    if never_stepped(folder):
        return OutputPlan(folder, restarted=True)
    done = latest_checkpoint(folder)
    if not resume:
        where = f"up to step {done[0]}" if done else "without a complete checkpoint yet"
        raise UsageError(
            f"-o {config.output}: holds another run ({where}); pass --resume to continue it, or choose another folder"
        )
    try:
        started = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        started = {}
    if not isinstance(started, dict):
        started = {}
    digest = started.get("config_sha256")  # runs started before rpt recorded it have none
    if digest is not None and file_digest(folder / CONFIG_FILE) != digest:
        raise UsageError(
            f"--resume: {folder / CONFIG_FILE} was changed after the run started (its digest in {RUN_FILE} "
            "differs), so it no longer says how the run was trained; put the file back as it was, or "
            "start a new run in another folder"
        )
    try:
        saved = load_saved_config(folder / CONFIG_FILE)
    except (InputError, ValueError, TypeError) as exc:
        raise UsageError(f"--resume: cannot read {folder / CONFIG_FILE} ({exc})") from None
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        raise UsageError(
            f"--resume: settings differ from the run in {config.output}: {'; '.join(conflicts)}. "
            "Use the run's settings (e.g. --config " + str(folder / CONFIG_FILE) + ") or another folder"
        )
    if started.get("samples_sha256") not in (None, samples.sha256):
        raise UsageError(
            f"--resume: {samples.path} is not the samples file the run in {config.output} started with "
            "(its contents differ), so the data order would change; resume with the same file"
        )
    final_step = completed_step(folder / FINAL)
    if final_step is not None and final_step >= config.max_steps:
        return OutputPlan(folder, resuming=True, finished=True, resume_step=final_step)
    if done is None:
        return OutputPlan(folder, resuming=True)
    return OutputPlan(folder, resume_from=done[1], resume_step=done[0], resuming=True)


__all__ = [
    "CONFIG_FILE",
    "RUN_FILE",
    "OutputPlan",
    "file_digest",
    "never_stepped",
    "output_folder",
    "plan_output",
    "with_absolute_paths",
]
