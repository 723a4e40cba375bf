"""Greedy generation speed with the key/value cache against re-running the decoder on the prefix.

    python benchmarks/generation_speed.py [--lengths 32 128 512] [--batch 1] [--threads 1]

A randomly initialised LanistrForSeq2Seq (the ``mini`` preset: width 256, 4 encoder and 4
decoder layers, 4 heads, vocabulary 8000) generates exactly L tokens (``min_new_tokens = L``,
so EOS never stops it early) for a batch of 64-token sources, once with the cache
(``use_cache=True``: each step runs the decoder on the one new token against cached keys/values)
and once without (each step re-runs the decoder on the whole prefix). Both must produce the same
tokens. Prints tokens/s of each and the ratio, and writes ``results/generation_speed.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

import _common

RESULTS = _common.RESULTS / "generation_speed.json"


def build_model(max_len: int):
    from lanistr.config import LanistrConfig
    from lanistr.nn.decoder import LanistrForSeq2Seq

    torch.manual_seed(0)
    config = LanistrConfig.from_name("mini", vocab_size=8000, max_len=max_len, decoder_layers=4,
                                     dropout=0.0, attention_dropout=0.0)
    return LanistrForSeq2Seq(config).eval()


def timed(model, ids, mask, generation) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = model.generate(ids, mask, generation)
    return time.perf_counter() - start, out.sequences


def main(argv: list[str] | None = None) -> int:
    from lanistr.nn.decoder import GenerationConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--source-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(max(args.lengths) + 8)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 8000, (args.batch, args.source_len), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    rows = []
    with torch.no_grad():
        # warm-up (allocator, kernels)
        warm = GenerationConfig(bos_token_id=2, eos_token_id=3, max_new_tokens=8, min_new_tokens=8)
        model.generate(ids, mask, warm)
        model.generate(ids, mask, warm.replace(use_cache=False))
        for length in args.lengths:
            gen = GenerationConfig(bos_token_id=2, eos_token_id=3, max_new_tokens=length,
                                   min_new_tokens=length)
            t_cache, seq_cache = timed(model, ids, mask, gen)
            t_full, seq_full = timed(model, ids, mask, gen.replace(use_cache=False))
            tokens = args.batch * length
            row = {"new_tokens": length, "batch": args.batch,
                   "cached_tokens_per_s": tokens / t_cache,
                   "uncached_tokens_per_s": tokens / t_full,
                   "speedup": t_full / t_cache,
                   "same_tokens": bool(torch.equal(seq_cache, seq_full)),
                   "cached_s": t_cache, "uncached_s": t_full}
            rows.append(row)
            print(f"L={length:4d}: cache {row['cached_tokens_per_s']:8.1f} tok/s, no cache "
                  f"{row['uncached_tokens_per_s']:8.1f} tok/s, ratio {row['speedup']:.2f}x, "
                  f"same tokens: {row['same_tokens']}", flush=True)
    result = {
        "benchmark": "greedy generation, KV cache vs re-running the prefix",
        "model": "LanistrForSeq2Seq mini preset (d=256, 4+4 layers, 4 heads, vocab 8000), "
                 "random init",
        "source_len": args.source_len, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "note": "shared 2-core CPU machine with other jobs running; absolute tokens/s are "
                "noisy, the ratio is measured in the same run",
        "results": rows,
    }
    out = _common.write_json("generation_speed", result, args.out)
    print(f"wrote {out}")
    return 0 if all(r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
