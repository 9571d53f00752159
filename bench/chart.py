#!/usr/bin/python3
"""Draws bench/results/<date>.png from <date>.json: for every workload, each
Hatchway path's ratio to each reference measured in the same run (>= 1:
Hatchway is as good or better; the line at 1 is parity)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ratios(rows):
    by_workload = {}
    for r in rows:
        by_workload.setdefault(r["workload"], []).append(r)
    out = []
    for workload, group in by_workload.items():
        refs = [r for r in group if not r["ours"]]
        for ours in (r for r in group if r["ours"]):
            for ref in refs:
                a, b = ours["median"], ref["median"]
                if not a or not b:
                    continue
                ratio = a / b if ours["higher_is_better"] else b / a
                out.append((f"{workload}\n{ours['path']} vs {ref['path']}", ratio))
    return out


def main(path):
    with open(path) as f:
        rows = json.load(f)
    data = ratios(rows)
    if not data:
        print("chart: no ratios to draw", file=sys.stderr)
        return
    labels = [d[0] for d in data]
    values = [d[1] for d in data]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(data) + 1.5))
    colors = ["#2a9d8f" if v >= 1 else "#e76f51" for v in values]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the reference (log scale; >= 1: Hatchway as good or better)")
    ax.set_title("Hatchway vs the tools people would use instead (same machine, same run)")
    fig.tight_layout()
    out = path.rsplit(".", 1)[0] + ".png"
    fig.savefig(out, dpi=80)
    print(f"chart: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
