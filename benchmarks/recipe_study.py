"""The held-out study behind the default recipe's length, truncation, learning-rate and freezing
rules: converted MiniLM fine-tuned on 2,000 training examples of a dataset, scored on 1,000
OTHER training examples (a seeded split of the training file; the test set is never read),
2 epochs, one variant at a time against the same split.

    python benchmarks/recipe_study.py --dataset 20newsgroups \\
        --variant 128-head '{"data": {"max_len": 128}}' \\
        --variant 128-lr4e-4-freeze4 '{"data": {"max_len": 128}, "train": {"lr": 4e-4}, "finetune": {"freeze_layers": 4}}'

Results (held-out accuracy and macro-F1 of each epoch, wall time) go to
``benchmarks/results/recipe_study_<dataset>.json``; ``benchmarks/results/recipe_study.md``
holds the runs behind the current rules.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="20newsgroups")
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                   help="a name and the run-config sections it sets (JSON)")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--work", default="/tmp/lanistr-recipe-study")
    args = p.parse_args(argv)

    import re

    from lanistr.tasks.finetune import finetune

    work = Path(args.work) / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    minilm = _common.converted_minilm(Path(args.work) / "minilm")
    train, held = _common.held_out_split(args.dataset, work, args.train_size, args.held_out)
    out_path = _common.RESULTS / f"recipe_study_{args.dataset}.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.setdefault("variants", {})
    for name, sections in args.variant:
        run = {"task": "classify", "init": str(minilm),
               "data": {"train": str(train), "eval": str(held)},
               "train": {"epochs": args.epochs, "save_every": 0, "keep_last": 1,
                         "progress": False, "seed": 0, "overwrite_output": True}}
        for key, value in json.loads(sections).items():
            run.setdefault(key, {}).update(value)
        shutil.rmtree(work / name, ignore_errors=True)  # train.log appends: this run's alone
        start = time.perf_counter()
        finetune(run, work / name)
        wall = time.perf_counter() - start
        log = (work / name / "train.log").read_text(encoding="utf-8")
        epochs = [{"accuracy": float(a), "macro_f1": float(f)} for a, f in re.findall(
            r"eval_accuracy=([0-9.]+), eval_loss=[0-9.]+, eval_macro_f1=([0-9.]+)", log)]
        results["variants"][name] = {"sections": json.loads(sections), "wall_s": round(wall, 1),
                                     "held_out_per_epoch": epochs,
                                     "load_average": _common.load_average()}
        print(name, results["variants"][name], flush=True)
        results.update(dataset=args.dataset, train_size=args.train_size,
                       held_out=args.held_out, epochs=args.epochs,
                       machine=_common.machine_info())
        _common.write_json(f"recipe_study_{args.dataset}", results, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
