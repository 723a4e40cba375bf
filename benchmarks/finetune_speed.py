"""Fine-tuning step cost of MiniLM-L6 (converted) with the levers of issue #19, as ratios
against recomputing every layer, measured interleaved in the same run:

* ``full``: one training step (forward + backward + AdamW) of every layer;
* ``cached-k``: the embeddings and the lower k layers frozen and their output cached
  (lanistr.tasks.frozen_cache): a step runs only the layers above k;
* ``cache-build``: computing the cache once (per batch of examples, forward of k layers);
* ``compile``: ``torch.compile`` of the full model (first-call compile time reported apart);
  ``cached-k+compile``: of the layers above the cache (the largest k of ``--frozen``).

``--precision bf16`` runs every contender under bf16 autocast (the fine-tuning default on a
CPU with native bf16).

Default: one thread and CPU time (``--clock cpu``), which a shared machine barely disturbs.

    python benchmarks/finetune_speed.py --max-len 256 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    converted_minilm,
    interleaved,
    load_average,
    machine_info,
    median,
    pick_clock,
    setup_torch,
    write_json,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frozen", default="3,4")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--work", default="runs/time_to_accuracy")
    p.add_argument("--out", help="result JSON (default benchmarks/results/finetune_speed.json)")
    args = p.parse_args(argv)
    import torch

    from lanistr.checkpoint import load_with_new_head
    from lanistr.nn import LanistrForSequenceClassification
    from lanistr.precision import autocast
    from lanistr.tasks.param_groups import freeze

    threads = setup_torch(args.threads)
    clock = pick_clock(args.clock, threads)
    minilm = converted_minilm(Path(args.work) / "minilm")
    labels = [str(i) for i in range(20)]
    b, t = args.batch_size, args.max_len
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    for i in range(b):  # a realistic spread of lengths: half the batch shorter than max_len
        mask[i, t - (i * t) // (2 * b):] = 0
    types = torch.zeros_like(ids)
    y = torch.randint(0, 20, (b,), generator=g)
    overrides = {"pooling": "mean", "use_pooler": False}

    def make(k: int):
        model = load_with_new_head(LanistrForSequenceClassification, minilm, labels, overrides)
        if k:
            freeze(model, True, k)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        return model, opt

    contenders, notes, top, cpu = {}, {}, None, torch.device("cpu")
    model, opt = make(0)
    model.train()

    def full_step(model=model, opt=opt):
        loss = torch.nn.functional.cross_entropy(model(ids, mask, types).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    contenders["full"] = full_step
    for k in [int(x) for x in args.frozen.split(",") if x]:
        m, o = make(k)
        m.eval()
        with torch.no_grad(), autocast(args.precision, cpu):
            hidden, _ = m.model.encoder.lower(ids, mask, types, k)
        hidden = hidden.float()  # the cache stores fp32
        m.train()

        def cached_step(m=m, o=o, hidden=hidden, k=k):
            loss = torch.nn.functional.cross_entropy(m.logits_from_layer(hidden, mask, k), y)
            loss.backward()
            o.step()
            o.zero_grad(set_to_none=True)

        @torch.no_grad()
        def build(m=m, k=k):
            m.model.encoder.lower(ids, mask, types, k)

        contenders[f"cached-{k}"] = cached_step
        top = (k, m, o, hidden)
        contenders[f"cache-build-{k}"] = build
    if args.compile:
        cm, co = make(0)
        cm.train()
        compiled = torch.compile(cm)
        t0 = time.perf_counter()

        def compiled_step():
            loss = torch.nn.functional.cross_entropy(compiled(ids, mask, types).logits, y)
            loss.backward()
            co.step()
            co.zero_grad(set_to_none=True)

        with autocast(args.precision, cpu):
            compiled_step()
        notes["compile_first_call_s"] = round(time.perf_counter() - t0, 1)
        contenders["compile"] = compiled_step
        if top is not None:
            k, m, o, hidden = top
            compiled_top = torch.compile(m.logits_from_layer)

            def compiled_cached_step(m=m, o=o, hidden=hidden, k=k):
                loss = torch.nn.functional.cross_entropy(compiled_top(hidden, mask, k), y)
                loss.backward()
                o.step()
                o.zero_grad(set_to_none=True)

            t0 = time.perf_counter()
            with autocast(args.precision, cpu):
                compiled_cached_step()
            notes[f"cached-{k}+compile_first_call_s"] = round(time.perf_counter() - t0, 1)
            contenders[f"cached-{k}+compile"] = compiled_cached_step
    contenders = {name: _under(fn, args.precision, cpu) for name, fn in contenders.items()}
    load_before = load_average()
    times = interleaved(contenders, repeats=args.repeats, warmup=1, clock=clock)
    base = median(times["full"])
    rows = {name: {"median_s": round(median(v), 4), "ratio_to_full": round(median(v) / base, 3),
                   "raw_s": [round(x, 4) for x in v]} for name, v in times.items()}
    print(f"batch {b} x {t} tokens (half the batch padded), {args.precision}, {threads} "
          f"thread(s), {args.clock} clock, load {load_before} -> {load_average()}")
    for name, r in rows.items():
        print(f"  {name:>14}: {r['median_s']:.3f} s  ({r['ratio_to_full']:.2f} x full step)")
    write_json("finetune_speed", {"batch_size": b, "max_len": t, "threads": threads,
                                  "clock": args.clock, "precision": args.precision,
                                  "rows": rows, **notes,
                                  "load_average": [load_before, load_average()],
                                  "machine": machine_info()}, args.out)
    return 0


def _under(fn, precision: str, device):
    from lanistr.precision import autocast

    def run():
        with autocast(precision, device):
            fn()

    return run


if __name__ == "__main__":
    sys.exit(main())
