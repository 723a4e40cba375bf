"""Does own pretraining pay? A `lanistr pretrain` model fine-tuned with the default recipe
against the same architecture fine-tuned from scratch, and TF-IDF + LR (issue #20).

    python benchmarks/own_model.py --model runs/own60/model --seeds 3 \\
        --datasets reuters-r8 spamassassin --systems scratch

* pretrained: ``lanistr finetune --set init=MODEL --set data.train=TRAIN --set train.seed=S``
  and nothing else (the default recipe chooses the rest, as in classification_quality.py);
* scratch: the same command with ``init=scratch``, MODEL's architecture (its config's fields
  that differ from the `mini` preset) and MODEL's tokenizer, so only the weights differ;
* baseline: TF-IDF (word 1-2 grams) + logistic regression, fitted once.

Whole test sets. Results are kept per (dataset, system, seed) in
``benchmarks/results/NAME.json`` (read-modified-written under a lock, so one invocation per
core can run different systems at once), and ``NAME.md`` is rewritten from all of them.
Targets: pretrained beats scratch by >= 5 accuracy points on 20newsgroups and reuters-r8, and
beats TF-IDF + LR on spamassassin (means of the seeds).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from classification_quality import DATASETS, _mean_std, baseline, run_seed  # noqa: E402

SYSTEMS = ("pretrained", "scratch")
CLASSIFY = [n for n, spec in DATASETS.items() if spec[0] == "classify"]
TARGET_POINTS = 5.0  # accuracy points over scratch on 20newsgroups and reuters-r8


def scratch_settings(model_dir: Path) -> list[str]:
    """``--set`` arguments that build MODEL's architecture from scratch with its tokenizer,
    and the dropout the default recipe fine-tunes MODEL with (so only the weights differ)."""
    from lanistr.checkpoint import read_config
    from lanistr.config import LanistrConfig
    from lanistr.tasks.recipe import FINETUNE_DROPOUT

    own = read_config(model_dir).to_dict()
    if own["dropout"] == 0:  # pretrained without dropout: the recipe turns it back on
        own["dropout"] = FINETUNE_DROPOUT
    mini = LanistrConfig.from_name("mini").to_dict()
    skip = {"architecture", "labels", "vocab_size", "pad_token_id", "use_pooler", "pooling"}
    out = ["--set", f"data.tokenizer={model_dir}"]
    for key, value in own.items():
        if key not in skip and value != mini.get(key):
            out += ["--set", f"model.{key}={json.dumps(value)}"]
    return out


def update(path: Path, change) -> dict:
    """Apply ``change`` to the JSON at ``path`` under an exclusive lock; returns it."""
    with open(Path(tempfile.gettempdir()) / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        change(data)
        _common.write_json(path.stem, data, path)
        return data


def report(data: dict) -> str:
    meta = data.get("meta", {})
    lines = ["# Own pretraining: fine-tuned from the pretrained model vs from scratch", "",
             f"Model `{meta.get('model')}`: {meta.get('model_note', '')}", "",
             "Both rows are `lanistr finetune` with the default recipe and nothing else but the "
             "seed (scratch: the same architecture and tokenizer, `init=scratch`); whole test "
             "sets; train time is the command's wall time.", "",
             "| dataset | system | seeds | accuracy | macro-F1 | train min per seed | "
             "load before -> after |", "|---|---|---:|---:|---:|---:|---|"]
    verdicts = []
    for name, entry in data.get("results", {}).items():
        base = entry.get("baseline")
        if base:
            lines.append(f"| {name} | {base['name']} | - | {base['accuracy']:.4f} | "
                         f"{base['macro_f1']:.4f} | {base['train_s'] / 60:.2f} | - |")
        means = {}
        earlier = sorted(k for k in entry if k not in (*SYSTEMS, "baseline"))  # see --supersede
        for system in (*SYSTEMS, *earlier):
            runs = [r for r in entry.get(system, []) if "accuracy" in r]
            if not runs:
                continue
            accs, f1s = [r["accuracy"] for r in runs], [r["macro_f1"] for r in runs]
            if system in SYSTEMS:
                means[system] = statistics.mean(accs)
            loads = "; ".join(f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}"
                              for r in runs)
            lines.append(f"| {name} | {system} | {len(runs)} | {_mean_std(accs)} | "
                         f"{_mean_std(f1s)} | "
                         f"{statistics.mean(r['train_s'] for r in runs) / 60:.1f} | {loads} |")
        if name == "spamassassin" and base and "pretrained" in means:
            ok = means["pretrained"] > base["accuracy"]
            verdicts.append(f"- {name}: pretrained {means['pretrained']:.4f} vs TF-IDF + LR "
                            f"{base['accuracy']:.4f}: {'met' if ok else 'MISS'}")
        elif name != "spamassassin" and len(means) == 2:
            gain = 100 * (means["pretrained"] - means["scratch"])
            verdicts.append(f"- {name}: pretrained - scratch = {gain:+.1f} accuracy points "
                            f"(target >= +{TARGET_POINTS:g}): "
                            f"{'met' if gain >= TARGET_POINTS else 'MISS'}")
    lines += ["", "Targets (issue #20; means of the seeds run):", ""]
    lines += verdicts or ["- (no dataset has both rows yet)"]
    lines += [""] + [f"- {n}" for n in meta.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a `lanistr pretrain` output's model/")
    p.add_argument("--datasets", nargs="+", default=CLASSIFY, choices=CLASSIFY)
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--work", default="/tmp/lanistr-own-model")
    p.add_argument("--model-note", default="", help="how the model was pretrained")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: all)")
    p.add_argument("--name", default="own_model")
    p.add_argument("--supersede", metavar="LABEL",
                   help="keep the --systems' rows so far under 'SYSTEM (LABEL)' (shown, not "
                   "judged) and run them again, e.g. after the recipe changed")
    args = p.parse_args()
    from lanistr.data.fetch import dataset_dir

    model, work = Path(args.model).resolve(), Path(args.work)
    path = _common.RESULTS / f"{args.name}.json"

    def meta(data):
        m = data.setdefault("meta", {"machine": _common.machine_info(), "notes": []})
        m["model"] = str(model)
        m["model_note"] = args.model_note or m.get("model_note", "")
        m["notes"] = m.get("notes", []) + args.note
        data.setdefault("results", {})

    update(path, meta)
    if args.supersede:
        def supersede(data):
            for name in args.datasets:
                entry = data["results"].get(name, {})
                for system in args.systems:
                    if entry.get(system):
                        entry[f"{system} ({args.supersede})"] = entry.pop(system)

        update(path, supersede)
    threads = _common.setup_torch(args.threads)  # (test scoring in this process)
    pinned = ("--set", f"train.num_threads={threads}") if args.threads else ()
    extra = {"pretrained": pinned, "scratch": (*pinned, *scratch_settings(model))}
    init = {"pretrained": str(model), "scratch": "scratch"}
    for name in args.datasets:
        kind, train_name, test_name, _ = DATASETS[name]
        root = dataset_dir(name)
        data = update(path, lambda d: None)
        if "baseline" not in data["results"].get(name, {}):
            b = baseline(kind, root / train_name, root / test_name)
            update(path, lambda d, n=name, b=b: d["results"].setdefault(n, {}).update(baseline=b))
    for seed in range(args.seeds):
        for name in args.datasets:
            kind, train_name, test_name, _ = DATASETS[name]
            root = dataset_dir(name)
            for system in args.systems:
                done = update(path, lambda d: None)["results"].get(name, {}).get(system, [])
                if any(r["seed"] == seed and "accuracy" in r for r in done):
                    continue
                print(f"{name} {system} seed {seed} (load {_common.load_average()})", flush=True)
                row = run_seed(name, kind, root / train_name, root / test_name, init[system],
                               seed, work / system, extra[system])
                row["finished"] = time.strftime("%Y-%m-%d %H:%M")

                def add(d, row=row, name=name, system=system):
                    runs = d["results"].setdefault(name, {}).setdefault(system, [])
                    runs[:] = [r for r in runs if r["seed"] != row["seed"]] + [row]

                data = update(path, add)
                print(f"  -> {row.get('accuracy', row.get('failed'))}", flush=True)
                _common.RESULTS.joinpath(f"{args.name}.md").write_text(report(data),
                                                                      encoding="utf-8")
    data = update(path, lambda d: None)
    _common.RESULTS.joinpath(f"{args.name}.md").write_text(report(data), encoding="utf-8")
    print(report(data))


if __name__ == "__main__":
    main()
