"""The table and the plot of examples/objectives.sh: for each model, its training signal (the first
and last 4 steps' mean reward, or loss for ntp, and the training time) and its held-out figures
(ntp accuracy, direct k=8 accuracy, mean information gain), all from rpt's own outputs.

    python examples/objectives_report.py OUT > OUT/table.md      (also writes OUT/objectives.png)
"""

import json
import sys
from pathlib import Path

RUNS = {"rpt-direct": "rpt, direct", "rpt-boxed": "rpt, boxed", "ntp": "ntp", "rlp": "rlp"}
WINDOW = 4


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_name(report: dict) -> str:
    return Path(report["run"]).name if report.get("run") else report["model"]


def training_signal(folder: Path) -> str:
    steps = read_jsonl(folder / "metrics.jsonl")
    key, label = ("reward_mean", "reward") if "reward_mean" in steps[0] else ("loss", "loss")
    first = sum(s[key] for s in steps[:WINDOW]) / len(steps[:WINDOW])
    last = sum(s[key] for s in steps[-WINDOW:]) / len(steps[-WINDOW:])
    minutes = sum(s["step_time_s"] for s in steps) / 60
    return f"{label} {first:.3f} → {last:.3f} ({len(steps)} steps, {minutes:.1f} min)"


def percent(entry: dict) -> str:
    if entry.get("accuracy") is None:
        return "-"
    low, high = entry["ci95"]
    return f"{100 * entry['accuracy']:.1f} [{100 * low:.1f}–{100 * high:.1f}]"


def gain(entry: dict) -> str:
    if entry.get("info_gain") is None:
        return "-"
    text = f"{entry['info_gain']:+.3f}"
    if entry.get("info_gain_ci95"):
        low, high = entry["info_gain_ci95"]
        text += f" [{low:+.3f}–{high:+.3f}]"
    return text + f", {100 * entry['accuracy']:.0f}% > 0"


def main(out: Path) -> None:
    reports = read_jsonl(out / "eval.jsonl") + read_jsonl(out / "gain.jsonl")
    by = {(run_name(r), r["mode"]): r for r in reports}
    names = ["smollm2-135m", *RUNS]
    first = reports[0]
    n_hard = first["splits"]["hard"]["n"]
    print(f"Held-out samples: {first['n']} (hard: {n_hard}). Accuracy in %, 95 % Wilson interval; gain in nats.\n")
    print(
        "| model | training (first → last 4 steps) | ntp, all | ntp, hard | direct k=8, all | direct k=8, hard "
        "| info gain, all | info gain, hard |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        ntp, direct, info = by[(name, "ntp")], by[(name, "reasoning")], by[(name, "gain")]
        signal = training_signal(out / name) if name in RUNS else "(base model)"
        label = f"{name} ({RUNS[name]})" if name in RUNS else name
        cells = [
            percent(ntp),
            percent(ntp["splits"]["hard"]),
            percent(direct),
            percent(direct["splits"]["hard"]),
            gain(info),
            gain(info["splits"]["hard"]),
        ]
        print(f"| {label} | {signal} | " + " | ".join(cells) + " |")
    plot(names, by, out / "objectives.png")


def plot(names: list[str], by: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("ntp", "accuracy", "Next-token accuracy (ntp), %", 100),
        ("reasoning", "accuracy", "Sampled guess accuracy (direct, k=8), %", 100),
        ("gain", "info_gain", "Mean information gain (nats), 4 thoughts", 1),
    )
    width = 0.38
    for ax, (mode, key, title, scale) in zip(axes, panels):
        for offset, split, color in ((-width / 2, None, "#4c72b0"), (width / 2, "hard", "#dd8452")):
            values, errors = [], [[], []]
            for name in names:
                entry = by[(name, mode)] if split is None else by[(name, mode)]["splits"][split]
                value = entry.get(key)
                interval = entry.get("ci95" if key == "accuracy" else "info_gain_ci95")
                values.append(scale * value if value is not None else 0.0)
                low, high = interval if (interval and value is not None) else (value or 0.0, value or 0.0)
                errors[0].append(scale * (value - low) if value is not None else 0.0)
                errors[1].append(scale * (high - value) if value is not None else 0.0)
            xs = [i + offset for i in range(len(names))]
            ax.bar(xs, values, width, yerr=errors, capsize=3, color=color, label=split or "all")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(["base", *RUNS], rotation=20)
        ax.set_title(title, fontsize=10)
        if mode == "gain":
            ax.axhline(0, color="black", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M and one epoch of each objective on the same 64 contexts (held-out samples)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
