"""Data-parallel scaling of ``lanistr pretrain``: tokens/s on 1 vs 2 processes.

Runs the real command under ``torchrun --standalone`` (gloo, ``OMP_NUM_THREADS=1`` per
process), `mini` preset, batch 16 per rank, sequences of 128 tokens, on the embedded State of
the Union sample (``data/sotu_sample.txt``; an 8000-word WordPiece tokenizer, the model
keeps the preset's 30522-row vocabulary). The tokenizer and token cache are built once
beforehand and shared, so the runs measure training only. Each run logs every step; the
throughput of a run is the median of the per-step global tokens/s after the warm-up steps
(the trainer's ``tokens_per_s`` in ``metrics.csv``). Runs alternate 1, 2, 1, 2, ...

    scaling efficiency = tps(2 processes) / (2 x tps(1 process))

    python benchmarks/ddp_scaling.py [--steps 30] [--warmup-steps 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_config(work: Path, args, tokenizer: Path | None, steps: int) -> list[str]:
    sets = [
        f"data.train=[{args.corpus}]", f"data.cache_dir={work / 'cache'}",
        f"data.vocab_size={args.vocab_size}", f"data.max_len={args.seq}",
        "model.preset=mini", f"train.batch_size={args.batch}", f"train.max_steps={steps}",
        "train.log_every=1", "train.eval_every=0", "train.save_every=0",
        "train.progress=false", "train.dist_backend=gloo", "train.num_threads=1",
        "train.warmup_steps=0", "train.schedule=constant", "train.lr=1e-4",
    ]
    if args.model_vocab:
        sets.append(f"model.vocab_size={args.model_vocab}")
    if tokenizer is not None:
        sets.append(f"data.tokenizer={tokenizer}")
    out = []
    for s in sets:
        out += ["--set", s]
    return out


def launch(nproc: int, output: Path, sets: list[str], timeout: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "lanistr", "pretrain", "--overwrite", "--output", str(output),
           *sets]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{nproc}-process run failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return {"wall_s": wall, "tokens_per_s": read_tps(output)}


def read_tps(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        return [float(r["value"]) for r in csv.DictReader(fh) if r["name"] == "tokens_per_s"]


def run(args) -> dict:
    load_before = _common.load_average()
    total_steps = args.warmup_steps + args.steps
    with tempfile.TemporaryDirectory(prefix="lanistr-ddp-bench-") as tmp:
        work = Path(tmp)
        # Tokenizer + token cache once (1 step), reused by every measured run.
        prep = launch(1, work / "prep", run_config(work, args, None, 1), args.timeout)
        tokenizer = work / "prep" / "tokenizer"
        runs: dict[str, list[dict]] = {"1": [], "2": []}
        for r in range(args.rounds):
            for nproc in (1, 2) if r % 2 == 0 else (2, 1):
                res = launch(nproc, work / f"run-{nproc}-{r}",
                             run_config(work, args, tokenizer, total_steps), args.timeout)
                steady = res["tokens_per_s"][args.warmup_steps:]
                res["median_tokens_per_s"] = _common.median(steady)
                runs[str(nproc)].append(res)
                print(f"round {r}: {nproc} process(es): {res['median_tokens_per_s']:,.0f} "
                      f"tokens/s (median of {len(steady)} steps), wall {res['wall_s']:.0f} s",
                      flush=True)
    tps = {k: _common.median([r["median_tokens_per_s"] for r in v]) for k, v in runs.items()}
    efficiency = tps["2"] / (2 * tps["1"])
    import torch

    result = {
        "benchmark": "ddp_scaling",
        "description": "tokens/s of `lanistr pretrain` on 1 vs 2 processes (torchrun "
                       "--standalone, gloo, OMP_NUM_THREADS=1 each), mini preset",
        "machine": _common.machine_info(),
        "threads_per_process": 1, "torch": torch.__version__,
        "corpus": str(args.corpus), "tokenizer_vocab_size": args.vocab_size,
        "model_vocab_size": args.model_vocab or args.vocab_size, "seq": args.seq,
        "batch_per_rank": args.batch, "warmup_steps": args.warmup_steps,
        "measured_steps": args.steps, "rounds": args.rounds, "prep_wall_s": prep["wall_s"],
        "load_average_before": load_before, "load_average_after": _common.load_average(),
        "tokens_per_s": tps, "speedup": tps["2"] / tps["1"], "scaling_efficiency": efficiency,
        "runs": runs,
    }
    path = _common.write_json("ddp_scaling", result, args.out)
    print(f"1 process {tps['1']:,.0f} tokens/s, 2 processes {tps['2']:,.0f} tokens/s: "
          f"speed-up {tps['2'] / tps['1']:.2f}x, scaling efficiency {efficiency:.0%}")
    print(f"load average before {load_before} after {result['load_average_after']}; "
          f"wrote {path}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=ROOT / "data" / "sotu_sample.txt")
    p.add_argument("--vocab-size", type=int, default=8000, help="tokenizer trained on the corpus")
    p.add_argument("--model-vocab", type=int, default=30522,
                   help="model vocabulary (the mini preset's 30522; 0 = the tokenizer's)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="sequences per rank and step")
    p.add_argument("--steps", type=int, default=30, help="measured steps per run")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps dropped from each run")
    p.add_argument("--rounds", type=int, default=2, help="runs per process count (alternated)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument("--out", help="JSON path (default benchmarks/results/ddp_scaling.json)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
