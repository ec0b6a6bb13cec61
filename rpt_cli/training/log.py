"""The log of an `rpt train` run: metrics.jsonl and batches.jsonl (one line per step, appended and
flushed as steps end) and the one-line progress report per step on standard error."""

from __future__ import annotations

from pathlib import Path

import orjson

from rpt_cli.training.checkpoints import write_atomic

METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


TIME_LABELS = {
    "generation_s": "gen",
    "reward_s": "reward",
    "scoring_s": "no-grad",
    "train_s": "fwd/bwd",
    "optimizer_s": "opt",
}


def _time_parts(m: dict) -> str:
    """Where the step's time went, e.g. `gen 10.2 + reward 0.1 + fwd/bwd 12.0 + opt 1.4`; parts
    that took no time (no passes without gradients in most runs) are left out."""
    parts = [f"{label} {m[key]:.1f}" for key, label in TIME_LABELS.items() if m.get(key, 0.0) >= 0.05]
    return " + ".join(parts) or "-"


class RunLog:
    """metrics.jsonl and batches.jsonl (one line per step, appended and flushed as steps end)
    and the one-line progress report per step on standard error.

    metrics.jsonl fields: step, reward_mean, reward_std (over the completions trained on),
    zero_variance_share_before / _after (groups whose G rewards are all equal, as drawn and as
    trained on), no_prediction_share, completion_length_mean, truncated_share, learning_rate,
    loss, grad_norm, step_time_s, generation_s, reward_s, scoring_s, train_s, optimizer_s (where the
    step's time went, `steps.StepTimes`), tokens_per_s (prompt and completion tokens of the step's
    sequences per second of step time), generated_tokens, prompt_tokens, trained_tokens,
    extra_forward_passes, groups_generated, sampling_rounds, flops (cumulative estimate,
    `steps.step_flops`), epoch (passes over the samples).
    With --objective ntp: step, loss, learning_rate, grad_norm, trained_tokens, step_time_s,
    tokens_per_s (trained tokens per second), flops (6N per trained token), epoch.
    """

    def __init__(self, folder: Path, max_steps: int, console, *, show_truncated: bool = True):
        self.metrics_path = folder / METRICS_FILE
        # in the direct answer format every completion is cut at its one token by design
        self.show_truncated = show_truncated
        self.batches_path = folder / BATCHES_FILE
        self.max_steps = max_steps
        self.console = console
        self.session_steps = 0
        self.session_seconds = 0.0

    def keep_until(self, step: int) -> None:
        """Drop lines of steps after `step` (redone after a resume) and a torn last line."""
        for path in (self.metrics_path, self.batches_path):
            if not path.exists():
                continue
            kept = []
            for raw in path.read_bytes().splitlines():
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                    kept.append(raw + b"\n")
            write_atomic(path, b"".join(kept).decode("utf-8"))

    def write_step(self, metrics: dict, batches: dict) -> None:
        for path, record in ((self.metrics_path, metrics), (self.batches_path, batches)):
            with open(path, "ab") as stream:
                stream.write(orjson.dumps(record) + b"\n")
        self.session_steps += 1
        self.session_seconds += metrics["step_time_s"]
        self.console.print(self.progress_line(metrics), markup=False)

    def progress_line(self, m: dict) -> str:
        remaining = (self.max_steps - m["step"]) * self.session_seconds / max(self.session_steps, 1)
        if "reward_mean" not in m:  # --objective ntp: a loss, no completions
            lr = f"{m['learning_rate']:.2g}" if m["learning_rate"] is not None else "-"
            return (
                f"train: step {m['step']}/{self.max_steps} | loss {m['loss']:.4f} | {m['trained_tokens']} tokens | "
                f"lr {lr} | {m['step_time_s']:.1f} s, {m['tokens_per_s']:.0f} tok/s | eta {_format_duration(remaining)}"
            )
        zero = f"{m['zero_variance_share_before']:.0%}"
        if m["sampling_rounds"] > 1 or m["zero_variance_share_after"] != m["zero_variance_share_before"]:
            zero += f"->{m['zero_variance_share_after']:.0%}"
        lr = f"{m['learning_rate']:.2g}" if m["learning_rate"] is not None else "-"
        length = f"len {m['completion_length_mean']:.0f}" + (
            f" (cut {m['truncated_share']:.0%})" if self.show_truncated else ""
        )
        return (
            f"train: step {m['step']}/{self.max_steps} | reward {m['reward_mean']:.3f} +- {m['reward_std']:.3f} | "
            f"no-var {zero} | no-pred {m['no_prediction_share']:.0%} | {length} | "
            f"lr {lr} | {m['step_time_s']:.1f} s ({_time_parts(m)}), {m['tokens_per_s']:.0f} tok/s | "
            f"eta {_format_duration(remaining)}"
        )

    def warn(self, message: str) -> None:
        self.console.print(f"train: warning: {message}", markup=False)
