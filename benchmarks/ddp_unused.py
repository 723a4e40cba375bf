"""DDP step time with ``find_unused_parameters=True`` (what the trainer always used) vs False
(what it uses now for a model whose ``uses_every_parameter`` is True).

Two processes under ``torchrun --standalone`` (gloo, ``OMP_NUM_THREADS=1`` each), a
sequence classifier (every parameter used) of the given preset, ``--batch`` sequences of
``--seq`` tokens per rank, AdamW. Two identical copies of the model are wrapped, one per
setting, and timed interleaved (``_common.interleaved``: alternating order, ``--steps``
optimizer steps per timing, ``--rounds`` timings each); rank 0 reports the median seconds
per step. The two copies start equal and see the same batches, so the losses must agree
(checked; dropout is off): the setting changes the bookkeeping, not the maths.

    python benchmarks/ddp_unused.py [--preset tiny|mini] [--rounds 7] [--steps 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lanistr.config import LanistrConfig
    from lanistr.nn import LanistrForSequenceClassification

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    # No dropout: the two copies then compute the same losses (checked below).
    config = LanistrConfig.from_name(args.preset, labels=["a", "b"], max_len=args.seq,
                                     vocab_size=args.vocab, dropout=0.0, attention_dropout=0.0)
    base = LanistrForSequenceClassification(config).train()
    assert base.uses_every_parameter
    models = {"find_unused=True": copy.deepcopy(base), "find_unused=False": copy.deepcopy(base)}
    ddps = {k: DDP(m, find_unused_parameters=k.endswith("True")) for k, m in models.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    g = torch.Generator().manual_seed(1 + rank)
    batches = [(torch.randint(5, args.vocab, (args.batch, args.seq), generator=g),
                torch.randint(0, 2, (args.batch,), generator=g)) for _ in range(args.steps)]
    losses: dict[str, list[float]] = {k: [] for k in ddps}

    def steps(name):
        def run():
            for ids, labels in batches:
                logits = ddps[name](ids).logits
                loss = torch.nn.functional.cross_entropy(logits, labels)
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
                losses[name].append(float(loss.detach()))
        return run

    times = _common.interleaved({k: steps(k) for k in ddps}, repeats=args.rounds, warmup=1)
    a, b = losses.values()
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, "the two settings diverged"
    if rank == 0:
        n = sum(p.numel() for p in base.parameters())
        print(f"preset={args.preset} params={n / 1e6:.2f}M ({len(list(base.parameters()))} "
              f"tensors) batch={args.batch}x{args.seq} per rank, 2 ranks gloo, 1 thread each, "
              f"load={_common.load_average()}")
        for k, v in times.items():
            s = _common.summary([t / args.steps for t in v])
            print(f"  {k:18s} median {s['median'] * 1e3:8.1f} ms/step  "
                  f"(min {s['min'] * 1e3:.1f}, max {s['max'] * 1e3:.1f}, n={s['n']})")
        t, f = (_common.median(v) for v in times.values())
        print(f"  False vs True: {100 * (f - t) / t:+.1f}% step time")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           __file__, "--worker", *sys.argv[1:]]
    raise SystemExit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
