"""What `rpt eval` can evaluate: a model, or a training run folder of `rpt train` and its checkpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rpt_cli.errors import UsageError

# What `rpt train` leaves in its output folder (rpt_cli/training/run.py, checkpoints.py).
RUN_CONFIG = "config.yaml"
RUN_METRICS = "metrics.jsonl"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")

# --------------------------------------------------------------------------------------------
# Models, training runs and checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class ModelRef:
    """A `--model` value, with what is known about it when it comes from `rpt train`."""

    spec: str  # as given
    source: str  # what is loaded: a run folder becomes its final model
    name: str  # the report's `model`
    run: Path | None = None  # the training run folder
    step: int | None = None  # training steps behind this checkpoint
    flops: float | None = None  # cumulative training compute at that step (metrics.jsonl)
    run_settings: dict = field(default_factory=dict)  # the run's config.yaml

    def as_fields(self) -> dict:
        return {
            "model": self.name,
            "model_path": str(Path(self.source).resolve()) if Path(self.source).exists() else None,
            "run": str(self.run.resolve()) if self.run else None,
            "step": self.step,
            "flops": self.flops,
        }


def checkpoint_step(folder: Path) -> int | None:
    """The training step a checkpoint (or final model) of `rpt train` holds: from its completion
    marker, else from a `checkpoint-N` name."""
    from rpt_cli.training.checkpoints import completed_step

    step = completed_step(folder)
    if step is not None:
        return step
    match = _CHECKPOINT_NAME.match(folder.name)
    return int(match.group(1)) if match else None


def check_complete(spec: str, folder: Path) -> None:
    """Refuse a checkpoint (or final model) of a run that lacks its completion marker: its save
    was interrupted, or is still going on, so its files may be partial."""
    from rpt_cli.training.checkpoints import MARKER, completed_step

    step = completed_step(folder)
    match = _CHECKPOINT_NAME.match(folder.name)
    if step is None or (match is not None and int(match.group(1)) != step):
        raise UsageError(
            f"--model {spec}: not a complete checkpoint (no {MARKER} for its step: its save was interrupted or "
            "is still under way); evaluate a complete checkpoint, the final model, or the run folder"
        )


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / RUN_CONFIG).is_file() and not (folder / "config.json").is_file()


def run_models(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint of a run, and of its final model when that
    holds a step no checkpoint does; by step."""
    from rpt_cli.training.checkpoints import FINAL, complete_checkpoints, completed_step

    found = dict(complete_checkpoints(run))
    final_step = completed_step(run / FINAL)
    if final_step is not None and final_step not in found:
        found[final_step] = run / FINAL
    return sorted(found.items())


def read_run_settings(run: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{run / RUN_CONFIG}: cannot read the run's settings ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_flops(metrics: Path) -> dict[int, float]:
    """Cumulative training compute by step, from a metrics.jsonl of `rpt train` (`step`, `flops`).
    A torn last line (a run killed mid-write) is ignored; another bad line is an input error."""
    from rpt_cli.files import read_log

    out: dict[int, float] = {}
    for _, record in read_log(str(metrics)):
        step, flops = record.get("step"), record.get("flops")
        if type(step) is int and type(flops) in (int, float):
            out[step] = float(flops)
    return out


def locate_model(spec: str) -> ModelRef:
    """What a `--model` value points at. A run folder of `rpt train` means its final model (else
    its newest complete checkpoint); a checkpoint of a run knows its step and compute."""
    from rpt_cli.models import display_name, resolve

    path = Path(spec).expanduser()
    if not path.is_dir():
        resolve(spec)  # a missing file or folder stops here, before any samples are read or models load
        return ModelRef(spec, spec, display_name(spec))
    run = None
    if is_run_folder(path):
        from rpt_cli.training.checkpoints import FINAL, completed_step

        models = run_models(path)
        if not models:
            raise UsageError(
                f"--model {spec}: the training run holds neither a final model nor a complete checkpoint yet"
            )
        run = path
        path = path / FINAL if completed_step(path / FINAL) is not None else models[-1][1]
    elif is_run_folder(path.parent):
        run = path.parent
        check_complete(spec, path)
    if run is None:
        return ModelRef(spec, str(path), display_name(str(path)))
    step = checkpoint_step(path)
    flops = read_flops(run / RUN_METRICS).get(step) if step is not None and (run / RUN_METRICS).is_file() else None
    return ModelRef(
        spec,
        str(path),
        f"{run.resolve().name}/{path.name}",
        run=run,
        step=step,
        flops=flops,
        run_settings=read_run_settings(run),
    )
