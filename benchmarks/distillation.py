"""A fine-tuned MiniLM teacher against a distilled student with half its layers.

    python benchmarks/distillation.py                      # the issue #20 target run
    python benchmarks/distillation.py --quick              # a smoke test (~2-3 min)

For each dataset (spamassassin, reuters-r8, 20newsgroups; fetched with `lanistr data fetch`):

1. teacher: MiniLM-L6-H384 (converted with `lanistr convert-hf minilm`) fine-tuned with
   `lanistr finetune` (the default recipe, capped at ``--minutes``);
2. student: the same MiniLM cut to ``--student-layers`` layers (its lower layers' weights),
   trained by `lanistr distill` in task mode: the teacher's soft targets at temperature 2
   (KL x T^2) plus 0.5 x the gold labels' cross-entropy, on the same training set;
3. both evaluated on the test split: accuracy, macro-F1, and inference throughput (real tokens
   per second through the same ``Predictor`` as `lanistr predict`, teacher and student timed
   interleaved over ``--repeats`` rounds, median).

Target (issue #20): the student keeps >= 97 % of the teacher's accuracy at >= 2x throughput.
Writes ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import converted_minilm, interleaved, load_average, machine_info, median, setup_torch
from _common import write_json as write_result

DATASETS = ("spamassassin", "reuters-r8", "20newsgroups")


def subset(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` lines of a JSONL file, taken evenly over the file (every k-th)."""
    lines = [ln for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if n and n < len(lines):
        step = len(lines) / n
        lines = [lines[int(i * step)] for i in range(n)]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def cli(*argv: str, sets: list[str]) -> None:
    from lanistr.cli import main

    code = main([*argv, *[a for s in sets for a in ("--set", s)]])
    if code:
        raise SystemExit(f"`lanistr {' '.join(argv)}` exited {code}")


def evaluate(model_dir: Path, texts: list[str], gold: list[str]) -> tuple[dict, object]:
    import numpy as np

    from lanistr.metrics import classification_scores
    from lanistr.tasks.predict import Predictor

    p = Predictor(model_dir)
    probs, _ = p.classify(texts)
    pred = probs.argmax(1)
    index = {name: i for i, name in enumerate(p.labels)}
    y = np.array([index[g] for g in gold])
    scores = classification_scores(y, pred, p.labels)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}, p


def throughput(predictors: dict, texts: list[str], repeats: int) -> dict:
    from lanistr.tasks.labelled import encode_texts

    tokens = {k: sum(len(x) for x in encode_texts(p.tokenizer, texts, None, p.max_len)[0])
              for k, p in predictors.items()}
    times = interleaved({k: (lambda p=p: p.classify(texts)) for k, p in predictors.items()},
                        repeats=repeats, warmup=1)
    return {k: {"tokens": tokens[k], "seconds": times[k], "tokens_per_s": tokens[k] /
                median(times[k])} for k in predictors}


def one_dataset(name: str, args, work: Path, minilm: Path) -> dict:
    import json

    from lanistr.data.fetch import dataset_dir

    data = dataset_dir(name)
    train = subset(data / "train.jsonl", work / f"{name}-train.jsonl", args.train_examples)
    test = subset(data / "test.jsonl", work / f"{name}-test.jsonl", args.test_examples)
    rows = [json.loads(ln) for ln in test.read_text(encoding="utf-8").splitlines()]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    common = ["train.progress=false", f"train.max_minutes={args.minutes}"]
    started = time.perf_counter()
    teacher = work / f"{name}-teacher"
    cli("finetune", "--output", str(teacher), sets=[
        f"init={minilm}", f"data.train={train}", f"data.max_len={args.max_len}", *common,
        *([f"train.max_steps={args.steps}", "train.epochs=0"] if args.steps else [])])
    teacher_s = time.perf_counter() - started
    started = time.perf_counter()
    student = work / f"{name}-student"
    cli("distill", "--output", str(student), sets=[
        f"init={minilm}", f"model.num_layers={args.student_layers}",
        f"distill.teacher={teacher / 'model'}", "distill.mode=task", "distill.hard_weight=0.5",
        "distill.temperature=2.0", f"data.train={train}", f"data.max_len={args.max_len}",
        "train.lr=1e-4", "train.warmup_ratio=0.1", "train.batch_size=16", "train.eval_every=0",
        *common, f"train.max_steps={args.steps or args.student_steps}"])
    student_s = time.perf_counter() - started
    t_scores, tp = evaluate(teacher / "model", texts, gold)
    s_scores, sp = evaluate(student / "model", texts, gold)
    speed = throughput({"teacher": tp, "student": sp}, texts, args.repeats)
    ratio = s_scores["accuracy"] / t_scores["accuracy"] if t_scores["accuracy"] else None
    speedup = speed["student"]["tokens_per_s"] / speed["teacher"]["tokens_per_s"]
    print(f"{name}: teacher acc {t_scores['accuracy']:.4f} F1 {t_scores['macro_f1']:.4f}, "
          f"student acc {s_scores['accuracy']:.4f} F1 {s_scores['macro_f1']:.4f} "
          f"({ratio:.3f} of the teacher), {speedup:.2f}x the teacher's tokens/s")
    return {"train_examples": len(train.read_text().splitlines()), "test_examples": len(texts),
            "teacher": {**t_scores, "layers": tp.model.config.num_layers, "train_s": teacher_s,
                        **speed["teacher"]},
            "student": {**s_scores, "layers": sp.model.config.num_layers, "train_s": student_s,
                        **speed["student"]},
            "accuracy_kept": ratio, "speedup": speedup,
            "meets_target": bool(ratio and ratio >= 0.97 and speedup >= 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training cap of each teacher fine-tuning and each distillation")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: spamassassin, 200 train / 100 test examples, "
                             "max_len 64, 20 steps each")
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--student-steps", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=0, help="fixed steps for both (0: recipe)")
    parser.add_argument("--train-examples", type=int, default=0, help="0 = all")
    parser.add_argument("--test-examples", type=int, default=0, help="0 = all")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.minutes, args.steps = args.datasets[:1], 1.0, 20
        args.train_examples, args.test_examples = 200, 100
        args.max_len, args.repeats = 64, 2
    name = args.name or ("distillation_quick" if args.quick else "distillation")
    threads = setup_torch(args.threads)
    load = [load_average()]
    with tempfile.TemporaryDirectory(prefix="lanistr-distill-") as tmp:
        work = Path(tmp)
        minilm = converted_minilm(work / "minilm")
        results = {d: one_dataset(d, args, work, minilm) for d in args.datasets}
    load.append(load_average())
    path = write_result(name, {
        "benchmark": "distillation", "quick": args.quick, "minutes": args.minutes,
        "steps": args.steps, "max_len": args.max_len, "student_layers": args.student_layers,
        "threads": threads, "load_average": load, "machine": machine_info(),
        "datasets": results,
        "target": "student keeps >= 97% of the teacher's accuracy at >= 2x throughput",
    }, args.out)
    if args.quick:
        print("[QUICK SMOKE RUN: a few steps on a small sample, not the issue's target]")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
