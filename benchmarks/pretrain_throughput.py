"""MLM pretraining throughput: lanistr ``LanistrForMaskedLM`` (sparse MLM logits, computed only
at the masked positions) vs ``transformers.BertForMaskedLM`` (full-vocabulary logits at every
position, its normal use), plus model FLOPs utilisation (MFU).

Same config (`mini` preset, vocab 30522), same weights (copied with ``convert_state``), seq
128, batch 16, 15% of the tokens masked, fp32, dropout 0.1 in both (train mode). One step is
forward + loss + backward + AdamW step + zero_grad, with the optimizer the lanistr trainer
builds (``torch.optim.AdamW`` with its decay / no-decay parameter groups) for both models.
Steps of the two models are interleaved in one process after a warm-up.

MFU = model FLOPs per token x tokens/s / peak, where the peak is the median FLOP/s of a
2048^3 fp32 matmul measured in the same run on the same threads. Model FLOPs per step
(matmuls only; embedding lookups, LayerNorm, softmax, GELU, dropout, the loss and the optimizer
count zero):

    6 x N x P_enc                 encoder linears (P_enc = L x (4 D^2 + 2 D F) weights;
                                  forward 2, backward 4 FLOPs per weight and token)
  + 12 x B x L x T^2 x D          attention scores QK^T and PV (2 x 2 T^2 D forward per
                                  sequence and layer, x3 for forward + backward)
  + 6 x M x (D^2 + D x V)         MLM head transform + tied decoder, at the M rows the
                                  head runs on (masked positions for lanistr, all N for HF)

with N = B x T tokens. lanistr's MFU counts its own (sparse) FLOPs; HF's MFU is reported
with its dense-head FLOPs for context. Targets: lanistr >= 2.5x HF tokens/s, MFU >= 50%.

    python benchmarks/pretrain_throughput.py [--threads 2] [--repeats 8] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

TARGET_RATIO = 2.5
TARGET_MFU = 0.5
MASK_ID = 103  # [MASK] in the BERT vocabulary


def model_flops(batch: int, seq: int, head_rows: int, cfg: dict) -> dict:
    """Training FLOPs of one step (see the module docstring)."""
    d, f, layers, v = (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
                       cfg["vocab_size"])
    n = batch * seq
    encoder = 6 * n * layers * (4 * d * d + 2 * d * f)
    attention = 12 * batch * layers * seq * seq * d
    head = 6 * head_rows * (d * d + d * v)
    return {"encoder_linears": encoder, "attention": attention, "mlm_head": head,
            "total": encoder + attention + head, "per_token": (encoder + attention + head) / n}


def make_batch(batch: int, seq: int, mask_prob: float, seed: int):
    """Random token ids with exactly round(mask_prob x seq) masked positions per sequence."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30522, (batch, seq), generator=g)
    k = round(mask_prob * seq)
    order = torch.rand(batch, seq, generator=g).argsort(dim=1)
    positions = torch.zeros(batch, seq, dtype=torch.bool)
    positions.scatter_(1, order[:, :k], True)
    labels = torch.where(positions, ids, torch.full_like(ids, -100))
    inputs = ids.masked_fill(positions, MASK_ID)
    return inputs, torch.ones_like(ids), torch.zeros_like(ids), positions, labels


def optimizer_for(model, lr: float, weight_decay: float, impl: str = "default"):
    """What lanistr's Trainer builds: AdamW, no decay on biases and LayerNorm weights.
    ``impl``: ``default`` (PyTorch's choice, a per-parameter loop on CPU, as in the Trainer),
    ``foreach`` or ``fused`` (what-if comparisons; applied to both models alike)."""
    import torch

    from lanistr.tasks.task import default_param_groups

    kwargs = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.AdamW(default_param_groups(model, weight_decay), lr=lr, **kwargs)


def run(args) -> dict:
    import torch
    import torch.nn.functional as F

    for name in args.what_if:
        _common.what_if_args(name)  # fail early on a bad name
    if args.malloc == "heap" and not _common.malloc_keep_heap():
        raise SystemExit("--malloc heap needs glibc (Linux)")
    threads = _common.setup_torch(args.threads)
    clock = _common.pick_clock(args.clock, threads)
    load_before = _common.load_average()
    peak_before = _common.matmul_peak(threads, clock=clock)
    hf, ours, attn_impl = _common.bert_pair("mlm", dropout=args.dropout, seed=args.seed)
    inputs, mask, types, positions, labels = make_batch(args.batch, args.seq, args.mask_prob,
                                                        args.seed + 1)
    targets = labels[positions]

    # Same outputs before timing (eval mode: no dropout).
    hf.eval()
    ours.eval()
    with torch.no_grad():
        ref = hf(input_ids=inputs, attention_mask=mask, token_type_ids=types).logits[positions]
        out = ours(inputs, mask, types, mlm_positions=positions).logits
        logits_diff = float((ref - out).abs().max())
    hf.train()
    ours.train()

    opt_hf = optimizer_for(hf, args.lr, 0.01, args.adamw)
    opt_ours = optimizer_for(ours, args.lr, 0.01, args.adamw)

    def step_hf():
        loss = hf(input_ids=inputs, attention_mask=mask, token_type_ids=types,
                  labels=labels).loss
        loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    def step_ours(model=ours):
        logits = model(inputs, mask, types, mlm_positions=positions).logits
        loss = F.cross_entropy(logits.float(), targets)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    contenders = {"transformers": step_hf, "lanistr": step_ours}
    compile_info = None
    if args.compile:
        compiled = torch.compile(ours)
        start = time.perf_counter()
        step_ours(compiled)  # first call compiles
        compile_info = {"first_step_s": time.perf_counter() - start}
        contenders["lanistr_compiled"] = lambda: step_ours(compiled)

    times = _common.interleaved(contenders, repeats=args.repeats, warmup=args.warmup, clock=clock)
    peak_after = _common.matmul_peak(threads, clock=clock)
    peak = _common.median(peak_before["times_s"] + peak_after["times_s"])
    peak_flops = 2 * peak_before["n"] ** 3 / peak

    n_tokens = args.batch * args.seq
    n_masked = int(positions.sum())
    flops = {"lanistr": model_flops(args.batch, args.seq, n_masked, _common.MINI),
             "transformers": model_flops(args.batch, args.seq, n_tokens, _common.MINI)}
    med = {k: _common.median(v) for k, v in times.items()}
    tps = {k: n_tokens / v for k, v in med.items()}
    mfu = {k: flops["transformers" if k == "transformers" else "lanistr"]["total"] / v / peak_flops
           for k, v in med.items()}
    ratio = tps["lanistr"] / tps["transformers"]
    result = {
        "benchmark": "pretrain_throughput",
        "description": "training tokens/s (forward + backward + AdamW step) of lanistr "
                       "LanistrForMaskedLM (sparse MLM logits) vs transformers.BertForMaskedLM "
                       "(full-vocabulary logits), identical weights, mini preset, fp32",
        "machine": _common.machine_info(),
        "threads": threads, "clock": args.clock, "hf_attn_implementation": attn_impl,
        "batch": args.batch, "seq": args.seq, "masked_tokens": n_masked,
        "tokens_per_step": n_tokens, "dropout": args.dropout, "lr": args.lr,
        "adamw": args.adamw, "malloc": args.malloc,
        "repeats": args.repeats, "warmup": args.warmup,
        "load_average_before": load_before, "load_average_after": _common.load_average(),
        "eval_logits_max_abs_diff_masked": logits_diff,
        "matmul_peak": {"flops": peak_flops, "before": peak_before, "after": peak_after},
        "flops_per_step": flops,
        "flops_formula": "6*N*L*(4*D^2+2*D*F) + 12*B*L*T^2*D + 6*M*(D^2+D*V); N=B*T tokens, "
                         "M = rows the MLM head runs on (masked for lanistr, N for HF)",
        "tokens_per_s": tps, "mfu": mfu, "ratio_lanistr_over_hf": ratio,
        "targets": {"ratio": TARGET_RATIO, "mfu": TARGET_MFU},
        "meets_targets": {"ratio": ratio >= TARGET_RATIO, "mfu": mfu["lanistr"] >= TARGET_MFU},
        "time_s": {k: _common.summary(v) for k, v in times.items()},
        "raw_times_s": times,
        "compile": compile_info,
    }
    if args.compile:
        result["ratio_compiled_over_hf"] = tps["lanistr_compiled"] / tps["transformers"]
    for name in args.what_if:
        result.setdefault("what_if", {})[name] = what_if(args, name)
    path = _common.write_json("pretrain_throughput", result, args.out)
    for k in times:
        print(f"{k:>17}: {med[k]:.3f} s/step, {tps[k]:,.0f} tokens/s, MFU {mfu[k]:.1%}")
    print(f"lanistr / transformers = {ratio:.2f}x (target {TARGET_RATIO}x); lanistr MFU "
          f"{mfu['lanistr']:.1%} (target {TARGET_MFU:.0%}) of a {peak_flops / 1e9:.0f} GFLOP/s "
          f"matmul peak; eval logits max |diff| {logits_diff:.2e}")
    if compile_info:
        print(f"torch.compile: first step {compile_info['first_step_s']:.1f} s, compiled / "
              f"transformers = {result['ratio_compiled_over_hf']:.2f}x")
    for name, w in result.get("what_if", {}).items():
        print(f"what if {name} (both models, {w['threads']} threads, {w['clock']} clock): "
              f"lanistr / transformers = "
              f"{w['ratio_lanistr_over_hf']:.2f}x, lanistr {w['tokens_per_s']['lanistr']:,.0f} "
              f"tokens/s, MFU {w['mfu']['lanistr']:.1%}")
    print(f"threads {threads}, load average before {load_before} after "
          f"{result['load_average_after']}; wrote {path}")
    return result


def what_if(args, name: str) -> dict:
    """The same measurement in a fresh process with other settings (see _common.WHAT_IF_ARGS:
    heap = glibc allocator keeps big tensors, fused = fused AdamW, cpu1 = 1 thread, CPU clock)."""
    same = ["--threads", str(args.threads), "--batch", str(args.batch), "--seq", str(args.seq),
            "--mask-prob", str(args.mask_prob), "--dropout", str(args.dropout),
            "--lr", str(args.lr), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
            "--clock", args.clock, "--seed", str(args.seed), "--malloc", args.malloc,
            "--adamw", args.adamw]
    child = _common.rerun(__file__, same + _common.what_if_args(name))
    keys = ("threads", "clock", "adamw", "malloc", "tokens_per_s", "mfu", "ratio_lanistr_over_hf",
            "time_s", "load_average_before", "load_average_after", "raw_times_s")
    return {**{k: child[k] for k in keys}, "matmul_peak_flops": child["matmul_peak"]["flops"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--adamw", choices=["default", "foreach", "fused"], default="default",
                   help="AdamW implementation for both models (default: as lanistr's Trainer)")
    p.add_argument("--malloc", choices=["default", "heap"], default="default",
                   help="heap: glibc keeps big tensors in its heap instead of mapping fresh "
                        "pages per allocation (what-if; helps both models, HF more)")
    p.add_argument("--what-if", nargs="*", default=[], metavar="VARIANT",
                   help="also measure these variants (each in a fresh process) and add them to "
                        "the JSON under what_if: heap (glibc keeps big tensors in its heap), "
                        "fused (fused AdamW), cpu1 (1 thread, CPU-time clock), or several "
                        "joined by + (e.g. heap+fused)")
    p.add_argument("--repeats", type=int, default=8, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile(lanistr model) (records the compile time)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time (default) or, with --threads 1, process CPU time: a "
                        "diagnostic that a busy shared machine barely disturbs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON path (default benchmarks/results/pretrain_throughput.json)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
