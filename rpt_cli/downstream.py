"""`rpt downstream`: zero-shot benchmarks of models and `rpt train` checkpoints with
lm-evaluation-harness (the paper's Tables 2–3 hand-off).

lm-eval does the evaluating (its `simple_evaluate`, its task configs, its metrics); this module
turns `--model` values into the Hugging Face folders lm-eval loads (a training run folder means its
final model, as in `rpt eval`), checks tasks and settings before any model loads, and turns
lm-eval's results into one flat record per model and task (docs/records.md, "Downstream reports").
lm-eval is an optional extra: `pip install 'rpt[lm-eval]'`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rpt_cli.errors import UsageError

LM_EVAL_INSTALL = "pip install 'rpt[lm-eval]'"
# lm-eval's metric keys are "metric,filter"; the standard error of each is "metric_stderr,filter"
_STDERR = "_stderr,"
# keys of lm-eval's per-task results that are not metrics
_NOT_METRICS = {"alias", "name", "sample_len", " ", "samples"}


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class DownstreamConfig:
    """What `rpt downstream` hands to lm-eval besides the model (docs/downstream.md, Options)."""

    tasks: tuple[str, ...]
    include_paths: tuple[str, ...] = ()
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: str = "1"  # lm-eval's: an integer, "auto" or "auto:N"
    device: str = "auto"
    dtype: str = "auto"
    chat: bool = False
    system_instruction: str | None = None
    think_end: str | None = None
    gen_kwargs: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    trust_remote_code: bool = False

    def check(self) -> None:
        if not self.tasks:
            raise UsageError("no task: give at least one --task (e.g. --task mmlu_pro; --list-tasks lists them)")
        if self.num_fewshot < 0:
            raise UsageError(f"--num-fewshot must not be negative, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        check_batch_size(self.batch_size)
        for path in self.include_paths:
            if not Path(path).is_dir():
                raise UsageError(f"--include-path {path}: no such folder (it should hold lm-eval task YAML files)")
        if "pretrained" in self.model_args:
            raise UsageError("--model-args: give the model with --model, not pretrained=")

    def settings(self) -> dict:
        """The settings every report records (enough to rerun it)."""
        return {
            "num_fewshot": self.num_fewshot,
            "limit": self.limit,
            "chat": self.chat,
            "system_instruction": self.system_instruction,
            "think_end": self.think_end,
            "gen_kwargs": dict(self.gen_kwargs),
            "model_args": dict(self.model_args),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "include_paths": [str(Path(p).resolve()) for p in self.include_paths],
        }


def check_batch_size(value: str) -> None:
    head, _, cap = value.partition(":")
    ok = value.isdigit() and int(value) >= 1 if head != "auto" else (not cap or (cap.isdigit() and int(cap) >= 1))
    if not ok:
        raise UsageError(f"--contexts-per-call {value}: expected a positive integer, auto, or auto:N")


def parse_pairs(text: str | None, option: str) -> dict:
    """`key=value,key=value` (lm-eval's syntax for model and generation arguments) into a dict;
    values that read as integers, numbers or true/false become those."""
    out: dict = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{option} {text}: expected key=value pairs separated by commas, got {item!r}")
        out[key] = _typed(value.strip())
    return out


def _typed(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def generation_kwargs(
    *,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    extra: dict,
) -> dict:
    """lm-eval's `gen_kwargs` from rpt's sampling options (the vocabulary of docs/options.md) and
    `--gen-kwargs`; only what was given, so each task's own generation settings stay otherwise.
    A temperature above 0 samples (`do_sample`), 0 is greedy."""
    out = dict(extra)
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        out["max_gen_toks"] = max_new_tokens
    if temperature is not None:
        if temperature < 0:
            raise UsageError(f"--temperature must not be negative, got {temperature}")
        out["temperature"] = temperature
        out.setdefault("do_sample", temperature > 0)
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {top_p}")
        out["top_p"] = top_p
    if top_k is not None:
        if top_k < 0:
            raise UsageError(f"--top-k must not be negative, got {top_k}")
        out["top_k"] = top_k
    return out


# --------------------------------------------------------------------------------------------
# lm-eval: installed, its tasks, the model folder
# --------------------------------------------------------------------------------------------


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise UsageError(f"rpt downstream needs lm-evaluation-harness: {LM_EVAL_INSTALL}")


def quiet_lm_eval() -> None:
    """lm-eval's notes (seeds set, few-shot counts overridden, ...) stay off standard error, as
    rpt train keeps TRL's; its own progress bars over requests stay (long runs need them)."""
    import logging

    from rpt_cli.models import quiet_transformers

    quiet_transformers()
    for name in ("lm_eval", "lm-eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()


def task_manager(include_paths: Sequence[str] = ()):
    """lm-eval's index of task configs: its own and those under `include_paths`."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(Path(p).resolve()) for p in include_paths] or None)


def check_tasks(manager, tasks: Sequence[str]) -> None:
    """Refuse a task (or group, or tag) lm-eval does not know, with the closest names."""
    import difflib

    known = set(manager.all_tasks)
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (--list-tasks lists them)"
            raise UsageError(f"--task {task}: lm-eval has no such task{hint}")


def split_tasks(values: Sequence[str] | None) -> tuple[str, ...]:
    """Tasks given as repeated `--task` and/or comma-separated, in order, each once."""
    names = [name.strip() for value in values or () for name in value.split(",")]
    return tuple(dict.fromkeys(name for name in names if name))


@dataclass
class Target:
    """A `--model` value and the Hugging Face folder (or hub id) lm-eval loads for it."""

    ref: object  # evaluate.runs.ModelRef: name, run, step, flops
    source: str


def locate(spec: str) -> Target:
    """What a `--model` value means to lm-eval: a run folder of `rpt train` is its final model
    (else its newest complete checkpoint), as in `rpt eval`; the built-in name and `.gguf` files
    are their converted Hugging Face folders."""
    from rpt_cli.evaluate.runs import locate_model
    from rpt_cli.models import resolve

    ref = locate_model(spec)
    return Target(ref, resolve(ref.source))


def model_folder(spec: str) -> str:
    """The folder (or hub id) `from_pretrained` loads for a `--model` value; for scripts such as
    examples/rlvr/run.sh that hand an RPT checkpoint to another tool."""
    return locate(spec).source


# --------------------------------------------------------------------------------------------
# Evaluate one model
# --------------------------------------------------------------------------------------------


def lm_eval_arguments(target: Target, config: DownstreamConfig, manager) -> dict:
    """The keyword arguments of `lm_eval.simple_evaluate` for one model."""
    from rpt_cli.models import resolve_device, resolve_dtype

    device = resolve_device(config.device)
    dtype = str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
    model_args = {"pretrained": target.source, "dtype": dtype, "trust_remote_code": config.trust_remote_code}
    if config.think_end is not None:
        model_args["think_end_token"] = config.think_end
    model_args.update(config.model_args)
    batch = config.batch_size
    return dict(
        model="hf",
        model_args=model_args,
        tasks=list(config.tasks),
        num_fewshot=config.num_fewshot,
        limit=config.limit,
        batch_size=int(batch) if batch.isdigit() else batch,
        device=device,
        apply_chat_template=config.chat,
        # few-shot examples as earlier turns of the chat when --chat (lm-eval's default); 0-shot: no effect
        fewshot_as_multiturn=config.chat,
        system_instruction=config.system_instruction,
        gen_kwargs=dict(config.gen_kwargs) or None,
        task_manager=manager,
        log_samples=True,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )


def evaluate_model(
    target: Target,
    config: DownstreamConfig,
    manager,
    *,
    on_sample: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run lm-eval on one model; one report per task and group (records.md), and one `on_sample`
    call per scored document."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(**lm_eval_arguments(target, config, manager))
    if results is None:  # lm-eval returns results on the main process only
        return []
    reports = reports_from(results, target, config)
    if on_sample is not None:
        for task, samples in results.get("samples", {}).items():
            for sample in samples:
                on_sample({"model": target.ref.name, "task": task, **_plain(sample)})
    return reports


def reports_from(results: dict, target: Target, config: DownstreamConfig) -> list[dict]:
    """One flat record per task and group of lm-eval's results, in lm-eval's order."""
    import lm_eval

    groups = results.get("group_subtasks", {})
    counts = {task: entry.get("effective") for task, entry in results.get("n-samples", {}).items()}
    out = []
    for task, entry in results.get("results", {}).items():
        metrics, stderr = {}, {}
        for key, value in entry.items():
            if key in _NOT_METRICS or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if _STDERR in key:
                stderr[key.replace(_STDERR, ",", 1)] = _number(value)
            else:
                metrics[key] = _number(value)
        out.append(
            {
                **target.ref.as_fields(),
                "task": task,
                "alias": str(entry.get("alias", task)).strip(" -"),
                "group": task in groups and bool(groups[task]),
                "n": _count(task, counts, groups),
                "metrics": metrics,
                "stderr": stderr,
                "higher_is_better": results.get("higher_is_better", {}).get(task, {}),
                "num_fewshot": results.get("n-shot", {}).get(task, config.num_fewshot),
                "task_version": results.get("versions", {}).get(task),
                "lm_eval": getattr(lm_eval, "__version__", None),
                "settings": config.settings(),
            }
        )
    return out


def _number(value):
    """lm-eval writes "N/A" for a stderr it could not compute, and NaN for some; JSON wants null."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(task: str, counts: dict, groups: dict, seen: frozenset = frozenset()) -> int | None:
    """Documents scored for a task; for a group, over its tasks."""
    if task in counts:
        return counts[task]
    if task not in groups or task in seen:
        return None
    parts = [_count(sub, counts, groups, seen | {task}) for sub in groups[task]]
    return sum(parts) if parts and all(p is not None for p in parts) else None


def _plain(value):
    """A sample of lm-eval as JSON holds it: tuples become lists, anything else its text (NaN
    is written as null)."""
    import json

    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------------------------
# The table for people (standard error)
# --------------------------------------------------------------------------------------------


def _metric_cell(report: dict) -> str:
    parts = []
    for key, value in report["metrics"].items():
        if value is None:
            continue
        name = key.removesuffix(",none")
        err = report["stderr"].get(key)
        parts.append(f"{name} {100 * value:.1f}" + (f" ± {100 * err:.1f}" if isinstance(err, (int, float)) else ""))
    return "\n".join(parts) or "-"


def report_table(reports: Sequence[dict]):
    """A row per model and task: n and every metric in % (± lm-eval's standard error)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Downstream (lm-eval), % ± standard error", title_justify="left")
    table.add_column("model")
    table.add_column("task")
    table.add_column("n", justify="right")
    table.add_column("metrics", justify="right")
    for report in reports:
        task = ("  " if not report["group"] and _in_group(report, reports) else "") + report["task"]
        n = "-" if report["n"] is None else f"{report['n']:,}"
        table.add_row(escape(str(report["model"])), escape(task), n, escape(_metric_cell(report)))
    return table


def _in_group(report: dict, reports: Sequence[dict]) -> bool:
    return any(r["group"] and r["model"] == report["model"] for r in reports)


__all__ = [
    "LM_EVAL_INSTALL",
    "DownstreamConfig",
    "Target",
    "check_tasks",
    "evaluate_model",
    "generation_kwargs",
    "lm_eval_arguments",
    "locate",
    "model_folder",
    "parse_pairs",
    "report_table",
    "reports_from",
    "require_lm_eval",
    "split_tasks",
    "task_manager",
]
