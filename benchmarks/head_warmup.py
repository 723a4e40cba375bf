"""The head warm-up (``finetune.head_init: probe``, LP-FT) against a random new head, on held-out
training data: the default recipe from converted MiniLM, ``--train-size`` training examples of
each dataset, scored on ``--held-out`` OTHER training examples (the seed-0 split of
``_common.held_out_split``; test sets not read), per training seed.

    python benchmarks/head_warmup.py --seeds 0,1 [--arms random,probe]

The ``random`` arm is the default recipe unchanged: the same runs as the shuffled arm of
``length_grouping.py`` (same split, seeds and settings; fine-tuning is deterministic per seed,
so ``--arms probe`` may be compared with those). Results: ``benchmarks/results/head_warmup.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ARMS = ("random", "probe")


def markdown(result: dict) -> str:
    lines = [
        "# Head warm-up (LP-FT) vs a random new head", "",
        _common.held_out_intro("head_warmup.py", result)
        + f", {result['machine']['torch_threads']} threads. " + result.get("note", ""), "",
        "| dataset | seed | head | held-out per epoch | wall s |", "|---|---:|---|---|---:|"]
    for name, seeds in result["datasets"].items():
        for seed, arms in seeds.items():
            for arm, r in arms.items():
                lines.append(f"| {name} | {seed} | {arm} | {_common.epoch_cells(r)} | "
                             f"{r['wall_s']} |")
    lines += ["", "Held-out metrics per epoch: accuracy / macro-F1 (Brown: token accuracy)."]
    lines += _common.last_epoch_deltas(result, "random", "probe", "probe minus random")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_held_out_args(p, "/tmp/lanistr-head-warmup")
    p.add_argument("--arms", default=",".join(ARMS), help="which of random,probe to run")
    p.add_argument("--reuse", help="take the random arm from this length_grouping.py result "
                   "(its shuffled arm: the same runs) instead of running it")
    p.add_argument("--out", default=str(_common.RESULTS / "head_warmup.json"))
    args = p.parse_args(argv)
    _common.setup_torch(args.threads)
    out = Path(args.out)
    result = {"train_size": args.train_size, "held_out": args.held_out, "epochs": args.epochs,
              "machine": _common.machine_info(), "datasets": {}}
    if out.is_file():  # add seeds, datasets or arms to a run of the same setup
        old = json.loads(out.read_text(encoding="utf-8"))
        if all(old.get(k) == result[k] for k in ("train_size", "held_out", "epochs")):
            result["datasets"] = old.get("datasets", {})
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text(encoding="utf-8"))
        result["note"] = (f"The random arms are the shuffled arms of `{Path(args.reuse).name}` "
                          "(the same runs).")
        for name, seeds in old["datasets"].items():
            for seed, arms in seeds.items():
                if "shuffled" in arms:
                    result["datasets"].setdefault(name, {}).setdefault(seed, {})[
                        "random"] = arms["shuffled"]
    arms = {arm: {"finetune": {"head_init": arm}} for arm in args.arms.split(",")}
    _common.held_out_study(args, "head_warmup", result, arms, out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
