"""Length-grouped training batches (``train.group_by_length``, an option, off by default) against
shuffled batches: the default recipe from converted MiniLM on ``--train-size`` training examples
of each dataset, scored on ``--held-out`` OTHER training examples (a seeded split of the training
file; test sets are never read), both arms in the same invocation, one after the other.

Reported per arm: held-out accuracy and macro-F1 (token accuracy for Brown) after every epoch,
the share of padding in the training batches (from the run's log), the wall time of the whole
command and of its training loop (the wall time less the frozen-layer cache, which is built
length-sorted in both arms).

    python benchmarks/length_grouping.py [--datasets reuters-r8,spamassassin,20newsgroups,brown]
        [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ARMS = {"shuffled": False, "grouped": True}


def markdown(result: dict) -> str:
    lines = [
        "# Length-grouped training batches vs shuffled batches", "",
        _common.held_out_intro("length_grouping.py", result)
        + ", training seeds as listed, the two arms one after the other "
        f"in one invocation, {result['machine']['torch_threads']} threads; mega-batches of "
        f"{result.get('mega', 50)} global batches. Loop = wall time less "
        "the frozen-layer cache (built length-sorted in both arms).", "",
        "| dataset | seed | batches | held-out per epoch | padding | loop s | wall s | "
        "loop speed-up |", "|---|---:|---|---|---:|---:|---:|---:|"]
    for name, seeds in result["datasets"].items():
        for seed, arms in seeds.items():
            for arm, r in arms.items():
                speed = (f"{arms['shuffled']['loop_s'] / r['loop_s']:.2f}x"
                         if arm == "grouped" and "shuffled" in arms else "")
                lines.append(f"| {name} | {seed} | {arm} | {_common.epoch_cells(r)} | "
                             f"{r['padding_pct']}% | {r['loop_s']} | {r['wall_s']} | {speed} |")
    keys = {k for seeds in result["datasets"].values() for arms in seeds.values()
            for r in arms.values() for e in r["held_out_per_epoch"] for k in e}
    lines += ["", f"Held-out metrics per epoch: {', '.join(sorted(keys))} (in that order). "
              "Load averages in `length_grouping.json`."]
    lines += _common.last_epoch_deltas(result, "shuffled", "grouped", "grouped minus shuffled")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_held_out_args(p, "/tmp/lanistr-length-grouping")
    p.add_argument("--out", default=str(_common.RESULTS / "length_grouping.json"))
    p.add_argument("--fresh", action="store_true", help="drop the results already in --out")
    p.add_argument("--arms", default=",".join(ARMS), help="which of shuffled,grouped to run")
    p.add_argument("--mega", type=int, default=0,
                   help="global batches per length-sorted mega-batch (default: the trainer's)")
    args = p.parse_args(argv)
    from lanistr.tasks.trainer import GlobalOrder

    if args.mega:  # the runs train in this process
        GlobalOrder.MEGA = args.mega
    _common.setup_torch(args.threads)
    out = Path(args.out)
    result = {"train_size": args.train_size, "held_out": args.held_out, "epochs": args.epochs,
              "mega": GlobalOrder.MEGA, "machine": _common.machine_info(), "datasets": {}}
    if out.is_file() and not args.fresh:  # add seeds or datasets to a run of the same setup
        old = json.loads(out.read_text(encoding="utf-8"))
        if all(old.get(k, 50 if k == "mega" else None) == result[k]
               for k in ("train_size", "held_out", "epochs", "mega")):
            result["datasets"] = old.get("datasets", {})
    arms = {a: {"train": {"group_by_length": ARMS[a]}} for a in args.arms.split(",")}
    _common.held_out_study(args, "length_grouping", result, arms, out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
