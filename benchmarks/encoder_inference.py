"""Encoder inference throughput: lanistr ``LanistrModel`` vs ``transformers.BertModel``.

Both models hold identical weights (the `mini` preset: hidden 256, 4 layers, 4 heads,
FFN 1024, vocab 30522; copied from the HF model with ``lanistr.convert.hf.convert_state``)
and run in the same process under ``torch.no_grad()``, eval mode, batch 32:

* case ``a``: every sequence has 128 tokens (no padding);
* case ``b``: lengths uniform in 16..128, padded to the batch maximum. Both models get the
  same padded batch and attention mask; lanistr skips the padding internally (its layers
  run on the real tokens only), `transformers` computes on every position.

Throughput counts real tokens only (padding excluded). Outputs are compared on the real
tokens (max abs difference) before timing. Targets: (a) >= 1.0x, (b) >= 1.5x.

    python benchmarks/encoder_inference.py [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

TARGETS = {"a": 1.0, "b": 1.5}


def make_batch(case: str, batch: int, max_len: int, seed: int):
    """(input_ids, attention_mask, token_type_ids, lengths) for a case."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if case == "a":
        lengths = torch.full((batch,), max_len)
    else:
        lengths = torch.randint(16, max_len + 1, (batch,), generator=g)
    t = int(lengths.max())
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()  # (B, T)
    ids = torch.randint(1000, 30522, (batch, t), generator=g) * mask
    return ids, mask, torch.zeros_like(ids), lengths


def run(args) -> dict:
    import torch

    for name in args.what_if:
        _common.what_if_args(name)  # fail early on a bad name
    threads = _common.setup_torch(args.threads)
    clock = _common.pick_clock(args.clock, threads)
    load_before = _common.load_average()
    hf, ours, attn_impl = _common.bert_pair("encoder", dropout=0.1, seed=args.seed)
    hf.eval()
    ours.eval()
    result = {
        "benchmark": "encoder_inference",
        "description": "tokens/s (real tokens) of lanistr LanistrModel vs transformers.BertModel, "
                       "identical weights, mini preset, torch.no_grad, eval mode",
        "machine": _common.machine_info(),
        "threads": threads, "clock": args.clock,
        "hf_attn_implementation": attn_impl,
        "batch": args.batch, "max_len": args.max_len, "repeats": args.repeats,
        "warmup": args.warmup, "targets": TARGETS, "load_average_before": load_before,
        "cases": {},
    }
    for case in args.cases:
        ids, mask, types, lengths = make_batch(case, args.batch, args.max_len, args.seed + 1)
        real = mask.bool()
        n_real = int(real.sum())
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            out = ours(ids, mask, types).last_hidden_state
            diff = float((ref[real] - out[real]).abs().max())

            def run_hf(ids=ids, mask=mask, types=types):
                hf(input_ids=ids, attention_mask=mask, token_type_ids=types)

            def run_ours(ids=ids, mask=mask, types=types):
                ours(ids, mask, types)

            times = _common.interleaved({"transformers": run_hf, "lanistr": run_ours},
                                        repeats=args.repeats, warmup=args.warmup, clock=clock)
        med = {k: _common.median(v) for k, v in times.items()}
        tps = {k: n_real / v for k, v in med.items()}
        ratio = tps["lanistr"] / tps["transformers"]
        result["cases"][case] = {
            "lengths": "all 128" if case == "a" else "uniform 16..128, padded to batch max",
            "padded_shape": list(ids.shape), "real_tokens": n_real,
            "padded_tokens": int(ids.numel()), "padding_fraction": 1 - n_real / ids.numel(),
            "max_abs_diff_real_tokens": diff,
            "tokens_per_s": tps, "ratio_lanistr_over_hf": ratio,
            "target": TARGETS[case], "meets_target": ratio >= TARGETS[case],
            "time_s": {k: _common.summary(v) for k, v in times.items()},
            "raw_times_s": times,
        }
        print(f"case {case} ({result['cases'][case]['lengths']}, {n_real} real of "
              f"{ids.numel()} tokens): transformers {tps['transformers']:,.0f} tok/s, "
              f"lanistr {tps['lanistr']:,.0f} tok/s -> {ratio:.2f}x "
              f"(target {TARGETS[case]}x); max |diff| {diff:.2e}")
    result["load_average_after"] = _common.load_average()
    for name in args.what_if:
        same = ["--threads", str(args.threads), "--batch", str(args.batch),
                "--max-len", str(args.max_len), "--repeats", str(args.repeats),
                "--warmup", str(args.warmup), "--cases", *args.cases, "--seed", str(args.seed),
                "--clock", args.clock]
        child = _common.rerun(__file__, same + _common.what_if_args(name))
        result.setdefault("what_if", {})[name] = {
            k: child[k] for k in ("threads", "clock", "load_average_before",
                                  "load_average_after", "cases")}
        for case, c in child["cases"].items():
            print(f"what if {name} ({child['threads']} threads, {child['clock']} clock): case "
                  f"{case} {c['ratio_lanistr_over_hf']:.2f}x")
    path = _common.write_json("encoder_inference", result, args.out)
    print(f"threads {threads}, load average before {load_before} after "
          f"{result['load_average_after']}; wrote {path}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per model and case")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--cases", nargs="+", default=["a", "b"], choices=["a", "b"])
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time (default) or, with --threads 1, process CPU time: a "
                        "diagnostic that a busy shared machine barely disturbs")
    p.add_argument("--what-if", nargs="*", default=[], metavar="VARIANT",
                   help="also measure these variants in fresh processes (JSON: what_if); "
                        "cpu1 = 1 thread timed with CPU time, steady on a busy machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default benchmarks/results/encoder_inference.json)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
