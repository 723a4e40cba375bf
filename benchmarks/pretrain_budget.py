"""Pretraining for a fixed wall-clock budget: lanistr against `transformers.BertForMaskedLM`.

    python benchmarks/pretrain_budget.py --minutes 60            # the issue #20 target run
    python benchmarks/pretrain_budget.py --quick                 # a smoke test (~2 min)

Both models get the same corpus (``lanistr data corpus`` of the fetched datasets' training
splits, or ``--corpus``; every 50th document held out), the same WordPiece tokenizer, the
same BERT `mini` size (4 layers x 256), the same packed sequences and 80/10/10 whole-word
masks in the same order (lanistr's ``MLMTask``), the same AdamW, clipping and budgeted
schedule (``train.schedule_by=time``: warm-up and decay follow the elapsed fraction of the
budget, so both reach lr 0 at the budget). They run one after the other, each for ``--minutes`` of
training time (evaluation is off the clock), with the load average recorded before and after.
lanistr trains through its own loop (``Trainer``: unpadded encoder, sparse MLM head);
`transformers` through a plain PyTorch loop (full-vocabulary logits at every position, as
``BertForMaskedLM(labels=...)`` computes them).

Writes ``benchmarks/results/NAME.json`` and ``NAME.png``: held-out MLM loss and accuracy
against training time for both, and the time lanistr needs to reach the `transformers` run's
final held-out loss as a fraction of the budget (issue #20's target: <= 0.40).

``--lanistr-layout bert`` (the default) gives lanistr the BERT layout `transformers` uses
(post-norm, dropout 0.1): the two training engines compared. ``--lanistr-layout defaults``
gives lanistr what ``lanistr pretrain`` builds when no preset is named (pre-norm blocks, no
dropout; ``PRETRAIN_MODEL_DEFAULTS``) while `transformers` keeps BERT's: what each library
gives a user who does not tune it, including its default ``train.precision: auto`` (bf16
autocast on a CPU or GPU that computes bf16 natively; ``--precision`` sets it,
``--hf-precision bf16`` runs `transformers` under the same autocast).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_info, setup_torch, write_json
from pretrain_recipe import split_corpus


def build(args, work: Path):
    """Tokenizer, MLM task (train + held-out batches) and the run config shared by both."""
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.distributed import DistContext
    from lanistr.tasks.pretrain import build_mlm_task, prepare_tokenizer
    from lanistr.tasks.run_config import parse_run

    if args.corpus:
        corpus = Path(args.corpus)
    else:
        from lanistr.data.corpus import build_corpus

        corpus = build_corpus(work / "corpus.txt", args.sources).path
    train, held = split_corpus(corpus, work, max_docs=args.max_docs)
    from lanistr.tasks.run_config import PRETRAIN_MODEL_DEFAULTS

    layout = PRETRAIN_MODEL_DEFAULTS if args.lanistr_layout == "defaults" else {}
    run = parse_run("pretrain", {
        "model": {"preset": "mini", "max_len": args.max_len, **layout},
        "data": {"train": [str(train)], "eval": [str(held)], "vocab_size": args.vocab,
                 "max_len": args.max_len, "eval_max_examples": args.eval_examples,
                 "cache_dir": str(work / "cache")},
        "train": {"batch_size": args.batch, "lr": args.lr, "schedule_by": "time",
                  "max_minutes": args.minutes, "max_steps": 0, "warmup_ratio": 0.06,
                  "eval_every": 0, "save_every": 0, "progress": False, "seed": 0,
                  "weight_decay": 0.01, "max_grad_norm": 1.0,
                  "precision": args.precision or ("auto" if args.lanistr_layout == "defaults"
                                                  else "fp32")},
    })
    ctx = DistContext()
    tokenizer: Tokenizer = prepare_tokenizer(run.data, work, ctx)
    task = build_mlm_task(run.data, tokenizer, work, ctx, 0, args.batch)
    return run, tokenizer, task, corpus


class Curve:
    """Held-out points against training time (evaluation itself off the clock)."""

    def __init__(self):
        self.paused = 0.0
        self.start = time.perf_counter()
        self.points: list[dict] = []

    def clock(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def evaluate(self, fn, step: int) -> dict:
        t = self.clock()
        begin = time.perf_counter()
        metrics = fn()
        self.paused += time.perf_counter() - begin
        self.points.append({"train_s": t, "step": step, **metrics})
        return metrics


def run_lanistr(run, tokenizer, task, work: Path, eval_times: list[float]) -> dict:
    import torch

    from lanistr.tasks.pretrain import build_mlm_model
    from lanistr.tasks.trainer import Trainer

    torch.manual_seed(0)
    model = build_mlm_model(run.model, tokenizer, run.data, None)
    curve = Curve()
    trainer = Trainer(model, task, run.train, work / "lanistr", clock=curve.clock)
    plain_eval = trainer.evaluate
    due = list(eval_times)

    def evaluate():  # at the same training times as the other run, off the clock
        metrics = plain_eval()
        return {k[5:]: v for k, v in metrics.items()}

    original_tick = trainer._tick  # the loop's one clock reading per step (a private hook:
    # this benchmark evaluates at the same training times as the other run, off the clock)

    def tick():
        original_tick()
        while due and curve.clock() >= due[0]:
            due.pop(0)
            curve.evaluate(evaluate, trainer.state.step + 1)

    trainer._tick = tick
    curve.evaluate(evaluate, 0)
    load = [load_average()]
    trainer.fit()
    load.append(load_average())
    curve.evaluate(evaluate, trainer.state.step)
    curve.points[-1]["train_s"] = trainer.state.elapsed  # the last step (not the final save)
    return {"steps": trainer.state.step, "train_s": trainer.state.elapsed, "curve": curve.points,
            "load_average": load, "parameters": model.num_parameters()}


def run_hf(run, tokenizer, task, eval_times: list[float], precision: str = "fp32") -> dict:
    import torch
    import transformers

    from lanistr.precision import autocast
    from lanistr.tasks.schedule import time_lr_factor
    from lanistr.tasks.trainer import GlobalOrder, TrainState

    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=256, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=1024, max_position_embeddings=run.data.max_len,
        type_vocab_size=2, hidden_act="gelu", pad_token_id=tokenizer.pad_id)
    model = transformers.BertForMaskedLM(cfg)
    train = run.train
    params = list(model.parameters())  # no weight decay on biases and LayerNorms, as lanistr
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optim = torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.adam_betas),
                              eps=train.adam_eps)
    order, state = GlobalOrder(task.train_size(), train.seed), TrainState()
    budget = 60.0 * train.max_minutes
    curve = Curve()
    due = list(eval_times)

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        for batch in task.eval_batches(0, 1):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).logits
            labels = batch["mlm_labels"]
            pick = labels != -100
            picked = logits[pick].float()
            sums["loss"] += float(torch.nn.functional.cross_entropy(
                picked, labels[pick], reduction="sum"))
            sums["correct"] += float((picked.argmax(-1) == labels[pick]).sum())
            sums["count"] += float(pick.sum())
        model.train()
        n = max(sums["count"], 1.0)
        return {"mlm_loss": sums["loss"] / n, "perplexity": math.exp(min(sums["loss"] / n, 50)),
                "mlm_accuracy": sums["correct"] / n}

    curve.evaluate(evaluate, 0)
    load = [load_average()]
    model.train()
    lr_factor = 0.0
    while curve.clock() < budget:
        for g in optim.param_groups:
            g["lr"] = train.lr * lr_factor
        batch = task.collate(order.next_batch(state, train.batch_size).tolist(), state.epoch)
        with autocast(precision, torch.device("cpu")):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"], labels=batch["mlm_labels"])
        out.loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        optim.step()
        optim.zero_grad(set_to_none=True)
        state.step += 1
        lr_factor = time_lr_factor(train, curve.clock() / budget)  # as lanistr's loop does
        while due and curve.clock() >= due[0]:
            due.pop(0)
            curve.evaluate(evaluate, state.step)
    load.append(load_average())
    curve.evaluate(evaluate, state.step)
    return {"steps": state.step, "train_s": curve.clock(), "curve": curve.points,
            "load_average": load, "parameters": sum(p.numel() for p in model.parameters())}


def time_to_reach(curve: list[dict], loss: float) -> float | None:
    """Training seconds at which a curve first reaches ``loss`` (linear between points)."""
    prev = None
    for p in curve:
        if p["mlm_loss"] <= loss:
            if prev is None:
                return p["train_s"]
            (t0, l0), (t1, l1) = (prev["train_s"], prev["mlm_loss"]), (p["train_s"], p["mlm_loss"])
            return t0 + (t1 - t0) * (l0 - loss) / (l0 - l1) if l0 != l1 else t1
        prev = p
    return None


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for name, run in result["runs"].items():
        t = [p["train_s"] / 60 for p in run["curve"]]
        axes[0].plot(t, [p["mlm_loss"] for p in run["curve"]], "o-", ms=3, label=name)
        axes[1].plot(t, [p["mlm_accuracy"] for p in run["curve"]], "o-", ms=3, label=name)
    axes[0].set_ylabel("held-out MLM loss")
    axes[1].set_ylabel("held-out MLM accuracy")
    for ax in axes:
        ax.set_xlabel("training time (min)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['minutes']:g}-minute budget, same data, tokenizer, batch and schedule"
                 + (" (QUICK SMOKE RUN)" if result["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget per model")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 0.5 min each, 1,500 documents, max_len 64")
    parser.add_argument("--corpus", help="a corpus file (default: `lanistr data corpus` of the "
                                         "fetched datasets)")
    parser.add_argument("--sources", nargs="*", default=[], help="datasets/files for the corpus")
    parser.add_argument("--max-docs", type=int, default=0, help="use the first N documents")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--evals", type=int, default=12, help="held-out points per run")
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--lanistr-layout", choices=("bert", "defaults"), default="bert",
                        help="lanistr's blocks: BERT's (post-norm, dropout 0.1, as transformers) "
                        "or lanistr pretrain's defaults (pre-norm, no dropout)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                        help="lanistr's train.precision (default: auto with --lanistr-layout "
                        "defaults, as lanistr pretrain; fp32 with bert)")
    parser.add_argument("--hf-precision", choices=("fp32", "bf16"), default="fp32",
                        help="transformers' training steps in fp32 (its default) or under the "
                        "same bf16 autocast")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.max_docs, args.max_len = 0.5, args.max_docs or 1500, 64
        args.batch, args.vocab, args.evals, args.eval_examples = 16, 4000, 5, 64
    name = args.name or ("pretrain_budget_quick" if args.quick else "pretrain_budget")
    import torch

    from lanistr.precision import resolve

    threads = setup_torch(args.threads)
    with tempfile.TemporaryDirectory(prefix="lanistr-budget-") as tmp:
        work = Path(tmp)
        run, tokenizer, task, corpus = build(args, work)
        budget = 60.0 * args.minutes
        eval_times = [budget * (i + 1) / args.evals for i in range(args.evals - 1)]
        print(f"corpus {corpus}: {task.train_size():,} training sequences of {args.max_len} "
              f"tokens; budget {args.minutes:g} min each; load {load_average()}")
        runs = {"lanistr": run_lanistr(run, tokenizer, task, work, eval_times),
                "transformers": run_hf(run, tokenizer, task, eval_times, args.hf_precision)}
    hf_final = runs["transformers"]["curve"][-1]["mlm_loss"]
    reach = time_to_reach(runs["lanistr"]["curve"], hf_final)
    result = {
        "benchmark": "pretrain_budget", "quick": args.quick, "minutes": args.minutes,
        "corpus": str(corpus), "train_sequences": task.train_size(), "max_len": args.max_len,
        "batch_size": args.batch, "lr": args.lr, "vocab_size": tokenizer.vocab_size,
        "lanistr_layout": {"norm": run.model.get("norm", "post"),
                           "dropout": run.model.get("dropout", 0.1)},
        "precision": {"lanistr": run.train.precision,
                      "lanistr_resolved": resolve(run.train.precision, torch.device("cpu"))[0],
                      "transformers": args.hf_precision},
        "threads": threads, "machine": machine_info(), "runs": runs,
        "transformers_final_mlm_loss": hf_final,
        "lanistr_final_mlm_loss": runs["lanistr"]["curve"][-1]["mlm_loss"],
        "lanistr_time_to_transformers_final_s": reach,
        "lanistr_time_fraction": None if reach is None else reach / runs["transformers"]["train_s"],
        "target": "lanistr reaches the transformers run's final held-out loss in <= 40% of its time",
    }
    path = write_json(name, result, args.out)
    plot(result, RESULTS / f"{name}.png" if not args.out else Path(args.out).with_suffix(".png"))
    for k, r in runs.items():
        print(f"{k:>12}: {r['steps']} steps in {r['train_s']:.0f} s, final held-out loss "
              f"{r['curve'][-1]['mlm_loss']:.3f} (acc {r['curve'][-1]['mlm_accuracy']:.3f})")
    frac = result["lanistr_time_fraction"]
    print("lanistr reaches the transformers final loss at "
          + (f"{frac:.2f} of the time" if frac is not None else "no point of its run")
          + (" [QUICK SMOKE RUN, not the issue's target]" if args.quick else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
