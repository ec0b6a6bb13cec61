"""A Markdown table of `rpt eval` reports: a row per model and mode, accuracy (%) per split with
its 95 % Wilson interval, and, for every model after the first of its mode, the paired difference
from that first model over all samples (percentage points, paired 95 % bootstrap interval, sign
test p). Used by the evidence scripts to put results in docs.

    python examples/reports_table.py reports.jsonl [more.jsonl ...] > table.md
"""

import json
import sys

SPLITS = ("easy", "medium", "hard")


def cell(entry: dict) -> str:
    if not entry or entry.get("accuracy") is None:
        return "-"
    low, high = entry["ci95"]
    return f"{100 * entry['accuracy']:.1f} [{100 * low:.1f}–{100 * high:.1f}]"


def main(paths: list[str]) -> None:
    reports = [json.loads(line) for path in paths for line in open(path, encoding="utf-8") if line.strip()]
    reports.sort(key=lambda r: (r.get("step") or 0, r["mode"]))
    first = reports[0]
    print(
        "| model | step | mode | "
        + " | ".join(f"{s} (n={first['splits'][s]['n']})" for s in SPLITS)
        + f" | all (n={first['n']}) | paired difference, all |"
    )
    print("|---|---:|---|" + "---:|" * (len(SPLITS) + 2))
    for r in reports:
        mode = "direct" if r["mode"] == "reasoning" and r.get("answer") == "direct" else r["mode"]
        if r["mode"] == "reasoning":
            mode += f", k={r['settings']['k']}"
        print(
            f"| {r['model']} | {r.get('step') or 0} | {mode} | "
            + " | ".join(cell(r["splits"].get(s, {})) for s in SPLITS)
            + f" | {cell(r)} | {paired(r.get('paired'))} |"
        )


def paired(entry: dict | None) -> str:
    if not entry or entry.get("difference") is None or entry.get("ci95") is None:
        return "-"
    low, high = entry["ci95"]
    return f"{100 * entry['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}], p={entry['p_value']:.2g}"


if __name__ == "__main__":
    main(sys.argv[1:])
