"""Plot the held-out MLM loss curve of a `lanistr pretrain` run and summarise it.

    python benchmarks/pretrain_curve.py runs/sotu-mini --name pretrain_sotu_mini

Writes benchmarks/results/NAME_curve.png and NAME.json (start/end held-out loss and
perplexity, steps, wall time, mean tokens/s, load average while plotting).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from _common import RESULTS, write_json


def read_metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with (run / "metrics.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            series[row["name"]].append((int(row["step"]), float(row["value"])))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --output directory of a pretraining run")
    parser.add_argument("--name", default="pretrain_curve")
    parser.add_argument("--note", default="", help="how the run was made (kept in the JSON)")
    args = parser.parse_args()
    series = read_metrics(args.run)
    held = series.get("eval_mlm_loss", [])
    if not held:
        raise SystemExit(f"{args.run}/metrics.csv has no eval_mlm_loss rows")
    train = series["loss"]
    tps = [v for _, v in series.get("tokens_per_s", [])]
    summary = {
        "run": str(args.run),
        "steps": train[-1][0],
        "held_out_mlm_loss_start": held[0][1],
        "held_out_mlm_loss_end": held[-1][1],
        "held_out_perplexity_start": math.exp(held[0][1]),
        "held_out_perplexity_end": math.exp(held[-1][1]),
        "first_eval_step": held[0][0],
        "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
        "load_average_now": os.getloadavg(),
    }
    acc = series.get("eval_mlm_accuracy", [])
    if acc:
        summary["held_out_mlm_accuracy"] = [{"step": s, "accuracy": v} for s, v in acc]
        summary["held_out_mlm_accuracy_end"] = acc[-1][1]
    if args.note:
        summary["note"] = args.note
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*train), lw=0.8, alpha=0.6, label="training loss (per step)")
    ax.plot(*zip(*held), "o-", lw=1.6, ms=3, label="held-out MLM loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"MLM pretraining: {args.run.name}")
    ax.grid(alpha=0.3)
    if acc:
        right = ax.twinx()
        right.plot(*zip(*acc), "s--", color="tab:green", ms=3, label="held-out MLM accuracy")
        right.set_ylabel("accuracy")
        right.legend(loc="center right")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{args.name}_curve.png")
    write_json(args.name, summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
