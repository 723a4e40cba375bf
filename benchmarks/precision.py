"""bf16 autocast vs fp32 training steps on this machine: what ``train.precision: auto`` buys.

Three contenders per precision, interleaved in one process (fp32 is the baseline of the same
run; results are ratios):

* ``matmul``: a (2048 x 384) @ (384 x 1536) product, MiniLM's feed-forward shape;
* ``pretrain_step``: one ``lanistr pretrain`` step of its default model (the ``mini`` preset,
  pre-norm, no dropout, vocabulary 8,000), batch 16 x 128 tokens, 15% masked, sparse MLM
  logits; forward + loss + backward + AdamW step;
* ``finetune_step``: one step of the default fine-tuning recipe on a MiniLM-L6-sized
  classifier (hidden 384, 6 layers, 12 heads, FFN 1,536; random weights: the speed does not
  depend on them), the lower 4 layers frozen and cached, so the step runs the top 2 layers and
  the head on cached states of a batch of 16 x 256 tokens.

``--compile`` adds the two steps in bf16 with the model's forward under ``torch.compile``
(issue #19's last speed lever; its first call, the compilation, is timed apart). The batches
here keep one shape; real batches vary in length and masked count, which recompiles.

``lanistr.precision.resolve("auto", cpu)`` says what ``auto`` picks here; the quality side
(held-out accuracy, loss) is measured by ``recipe_study.py`` and ``pretrain_budget.py``.

    python benchmarks/precision.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def contenders(precision: str, seed: int = 0, compiled: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    from lanistr.config import LanistrConfig
    from lanistr.nn import LanistrForMaskedLM, LanistrForSequenceClassification
    from lanistr.precision import autocast
    from lanistr.tasks import param_groups
    from lanistr.tasks.task import default_param_groups

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    a, w = torch.randn(2048, 384, generator=g), torch.randn(384, 1536, generator=g)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, w = a.to(dtype), w.to(dtype)

    torch.manual_seed(seed)
    mlm = LanistrForMaskedLM(LanistrConfig.from_name(
        "mini", vocab_size=8000, norm="pre", dropout=0.0, attention_dropout=0.0))
    mlm.train()
    opt_mlm = torch.optim.AdamW(default_param_groups(mlm, 0.01), lr=1e-3)
    ids = torch.randint(5, 8000, (16, 128), generator=g)
    positions = torch.rand(16, 128, generator=g) < 0.15
    targets = ids[positions]
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)

    mlm_forward = torch.compile(mlm) if compiled else mlm

    def pretrain_step():
        with autocast(precision, cpu):
            logits = mlm_forward(ids, mask, types, mlm_positions=positions).logits
        F.cross_entropy(logits.float(), targets).backward()
        opt_mlm.step()
        opt_mlm.zero_grad(set_to_none=True)

    clf = LanistrForSequenceClassification(LanistrConfig.from_any(
        {"vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "num_heads": 12,
         "ffn_dim": 1536, "pooling": "mean", "labels": [str(i) for i in range(20)]}))
    param_groups.freeze(clf, True, 4)
    clf.train()
    opt_clf = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=4e-4)
    lengths = torch.randint(128, 257, (16,), generator=g)
    attn = (torch.arange(256)[None, :] < lengths[:, None]).long()
    states = torch.randn(int(lengths.sum()), 384, generator=g)
    labels = torch.randint(0, 20, (16,), generator=g)

    top_forward = torch.compile(clf.logits_from_layer) if compiled else clf.logits_from_layer

    def finetune_step():
        with autocast(precision, cpu):
            logits = top_forward(states, attn, 4)
        F.cross_entropy(logits.float(), labels).backward()
        opt_clf.step()
        opt_clf.zero_grad(set_to_none=True)

    return {"matmul": lambda: a @ w, "pretrain_step": pretrain_step,
            "finetune_step": finetune_step}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", action="store_true",
                   help="also time the bf16 steps with torch.compile")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    from lanistr.precision import resolve

    threads = _common.setup_torch(args.threads)
    load_before = _common.load_average()
    runs = {prec: contenders(prec) for prec in ("fp32", "bf16")}
    compile_s = {}
    if args.compile:
        runs["bf16+compile"] = contenders("bf16", compiled=True)
        for name, fn in runs["bf16+compile"].items():
            start = time.perf_counter()
            fn()
            compile_s[name] = round(time.perf_counter() - start, 1)
    flat = {f"{name}/{prec}": fn for prec, fns in runs.items() for name, fn in fns.items()
            if not (prec == "bf16+compile" and name == "matmul")}
    times = _common.interleaved(flat, repeats=args.repeats, warmup=2)
    result = {"threads": threads, "repeats": args.repeats, "machine": _common.machine_info(),
              "load_average_before": load_before, "load_average_after": _common.load_average(),
              "auto_resolves_to": dict(zip(("precision", "why"),
                                           resolve("auto", torch.device("cpu")))),
              "steps": {}}
    for name in runs["fp32"]:
        fp32 = _common.median(times[f"{name}/fp32"])
        bf16 = _common.median(times[f"{name}/bf16"])
        row = result["steps"][name] = {"fp32_ms": round(fp32 * 1e3, 2),
                                       "bf16_ms": round(bf16 * 1e3, 2),
                                       "bf16_speedup": round(fp32 / bf16, 2)}
        line = (f"{name:14s} fp32 {fp32 * 1e3:8.1f} ms  bf16 {bf16 * 1e3:8.1f} ms  "
                f"bf16 {fp32 / bf16:.2f}x")
        if f"{name}/bf16+compile" in times and name != "matmul":
            comp = _common.median(times[f"{name}/bf16+compile"])
            row.update(bf16_compile_ms=round(comp * 1e3, 2),
                       compile_speedup_over_bf16=round(bf16 / comp, 2),
                       compile_first_call_s=compile_s[name])
            line += f"  bf16+compile {comp * 1e3:8.1f} ms ({bf16 / comp:.2f}x over bf16)"
        print(line)
    print(f"auto resolves to {result['auto_resolves_to']['precision']} "
          f"({result['auto_resolves_to']['why']}); load {load_before} -> "
          f"{result['load_average_after']}")
    path = _common.write_json("precision", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
