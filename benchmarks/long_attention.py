"""Long-sequence attention: time and peak memory of each backend against full SDPA.

What is measured: the attention op alone (``backend(q, k, v)``, no Q/K/V/output projections;
Linformer's sequence projections of K and V are part of its op), q/k/v of shape
``(1, 4, T, 64)`` (hidden 256, 4 heads, batch 1, fp32, no padding), for T in 512..16384:

- ``forward``: under ``torch.no_grad()``;
- ``forward+backward``: forward with grad, then ``out.backward(g)`` into q/k/v (and the
  backend's parameters).

Contenders: ``full`` (``F.scaled_dot_product_attention``), ``full+weights`` (full attention with
explicit weights: the softmax of a T x T matrix, what ``need_weights=True`` does), and every
other registered backend with its default parameters (sliding_window: window 256, global
token 0; linformer: k 128 with E/F of T rows; lsh: bucket 64, 2 hashes).

Each (backend, T) runs in a fresh subprocess with ``torch.set_num_threads(2)``. It warms the
backend up at T=256, allocates the inputs, then before each run returns free heap memory to
the kernel (``malloc_trim``), resets the resident-set high-water mark
(``/proc/self/clear_refs``), notes the RSS, runs, and reports ``VmHWM - RSS before`` as the
peak memory (so library pages, inputs and the warm-up are not counted; the output, saved
tensors, gradients and temporaries are). Time is the median of up
to 3 runs (1 when a run takes more than 2 s). Configurations whose estimated footprint exceeds
``--max-gb`` are not run and are marked ``skipped (memory)``.

The worker processes run with ``OMP_WAIT_POLICY=PASSIVE`` unless ``--omp-wait-policy`` says
otherwise: on a shared, oversubscribed machine the default policy lets idle OpenMP workers spin
and take the core from the main thread, which penalises code made of many kernels (the blocked
backends) far more than one fused kernel (SDPA); a spot check at the largest T under the
default policy is recorded as ``default_policy_check``.

Usage: ``python benchmarks/long_attention.py`` (about 5-10 minutes on 2 cores); writes
``benchmarks/results/long_attention.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, load_average, machine_info, setup_torch, write_json  # noqa: E402

LENGTHS = [512, 1024, 2048, 4096, 8192, 16384]
HEADS, HEAD_DIM, THREADS = 4, 64, 2
MODES = ("forward", "forward+backward")


# --------------------------------------------------------------------------------------------
# worker: one backend at one length, in its own process


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024
            for key in ("VmRSS", "VmHWM")}


def _reset_peak() -> int:
    """Hand free heap memory back to the kernel (else a run could reuse pages that an
    earlier run left resident, unseen), reset the RSS high-water mark; return the RSS."""
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status()["VmRSS"]


def _build(contender: str, t: int):
    import torch

    from lanistr.config import from_dict
    from lanistr.nn.attention import get_backend

    name = "full" if contender == "full+weights" else contender
    spec = get_backend(name)
    backend = spec.cls(from_dict(spec.config_cls, {}, "attention"), max_len=t, dropout=0.0)
    need_weights = contender == "full+weights"

    def run(q, k, v, g=None):
        if g is None:
            with torch.no_grad():
                return backend(q, k, v, need_weights=need_weights)
        out, weights = backend(q, k, v, need_weights=need_weights)
        out.backward(g)
        return out, weights

    return backend, run


def worker(contender: str, t: int, modes=MODES) -> dict:
    import torch

    setup_torch(THREADS)
    result = {"backend": contender, "T": t}
    for size in (256, t):  # warm-up at 256 (lazy kernel set-up), then the measured length
        torch.manual_seed(0)
        backend, run = _build(contender, size)
        q, k, v = (torch.randn(1, HEADS, size, HEAD_DIM, requires_grad=True) for _ in range(3))
        g = torch.randn(1, HEADS, size, HEAD_DIM)
        if size != t:
            run(q, k, v)
            run(q, k, v, g)
            del backend, run, q, k, v, g
    for mode in modes:
        times, peaks = [], []
        while len(times) < 3 and (not times or times[-1] < 2.0):
            for x in (q, k, v, *backend.parameters()):
                x.grad = None
            base = _reset_peak()
            start = time.perf_counter()
            res = run(q, k, v, g if mode == "forward+backward" else None)
            times.append(time.perf_counter() - start)
            del res
            peaks.append(_status()["VmHWM"] - base)
        result[mode] = {"time_s": statistics.median(times), "times_s": times,
                        "peak_mb": max(peaks) / 2**20}
    return result


# --------------------------------------------------------------------------------------------
# driver


def estimated_gb(contender: str, t: int) -> float:
    """Rough peak footprint of the forward+backward (GB), to skip what cannot fit."""
    if contender == "full+weights":
        return 5 * HEADS * t * t * 4 / 1e9  # scores, scaled scores, probs and their gradients
    return 0.0


def run_worker(contender: str, t: int, policy: str | None, timeout: float,
               forward_only: bool = False) -> dict:
    env = dict(os.environ)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    cmd = [sys.executable, __file__, "--worker", contender, str(t)]
    if forward_only:
        cmd.append("--forward-only")
    load = load_average()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"backend": contender, "T": t, "skipped": f"timeout ({timeout:.0f} s)"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"backend": contender, "T": t, "skipped": f"failed: {tail[0][:200]}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average"] = [load, load_average()]
    return result


def crossover(rows: list[dict], contender: str, mode: str, key: str) -> int | None:
    """Smallest T from which ``contender`` beats full SDPA on ``key`` at every measured T."""
    by_t = {(r["backend"], r["T"]): r for r in rows if mode in r}
    beats = []
    for t in LENGTHS:
        a, b = by_t.get((contender, t)), by_t.get(("full", t))
        if a is None or b is None:
            continue
        beats.append((t, a[mode][key] < b[mode][key]))
    result = None
    for t, ok in reversed(beats):
        if not ok:
            break
        result = t
    return result


def ratios_at(rows: list[dict], t: int) -> dict:
    """Per contender at length t: SDPA time / its time and SDPA memory / its memory (and its
    memory against full+weights where that was measured)."""
    by = {r["backend"]: r for r in rows if r["T"] == t and MODES[0] in r}
    out = {}
    for name, r in by.items():
        entry = {}
        for mode in MODES:
            if "full" in by:
                entry[f"speedup_vs_sdpa_{mode}"] = by["full"][mode]["time_s"] / r[mode]["time_s"]
                entry[f"sdpa_mem_over_mem_{mode}"] = (by["full"][mode]["peak_mb"]
                                                      / max(r[mode]["peak_mb"], 1e-3))
        out[name] = entry
    return out


def markdown(data: dict) -> str:
    rows = data["results"]
    names = data["contenders"]
    lines = [
        "# Long-sequence attention: time and peak memory",
        "",
        f"Attention op only (no projections), batch 1, {HEADS} heads x {HEAD_DIM} (hidden "
        f"{HEADS * HEAD_DIM}), fp32, {THREADS} threads, `OMP_WAIT_POLICY="
        f"{data['omp_wait_policy'] or 'default'}`; each backend x length in a fresh process. "
        "Peak memory = RSS high-water mark of the run minus the RSS just before it (inputs "
        "and warm-up excluded). `full` is `F.scaled_dot_product_attention`; `full+weights` "
        "materialises the T x T softmax.",
        "",
        f"Machine: {data['machine']['processor']}, {data['machine']['cpu_count']} cores, torch "
        f"{data['machine']['torch']}. Load average (1/5/15 min) before: "
        f"{data['load_average_before']}, after: {data['load_average_after']} (shared machine: "
        "absolute times are depressed and noisy, ratios are more robust).",
        "",
    ]
    for mode in MODES:
        lines += [f"## {mode}", "", "| T | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for t in LENGTHS:
            cells = []
            for name in names:
                r = next((r for r in rows if r["backend"] == name and r["T"] == t), None)
                if r is None:
                    cells.append("-")
                elif "skipped" in r:
                    cells.append(r["skipped"])
                else:
                    cells.append(f"{r[mode]['time_s']:.3f} s / {r[mode]['peak_mb']:.1f} MB")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    top = LENGTHS[-1]
    lines += [f"## Ratios at T={top}", "",
              "| backend | speed-up vs SDPA (fwd) | speed-up vs SDPA (fwd+bwd) | "
              "SDPA memory / memory (fwd) | SDPA memory / memory (fwd+bwd) |",
              "|---|---|---|---|---|"]
    for name, e in data["ratios_at_max_T"].items():
        if name == "full":
            continue
        lines.append(f"| {name} | " + " | ".join(
            f"{e.get(key, float('nan')):.2f}x" for key in (
                "speedup_vs_sdpa_forward", "speedup_vs_sdpa_forward+backward",
                "sdpa_mem_over_mem_forward", "sdpa_mem_over_mem_forward+backward")) + " |")
    fw = data.get("sliding_window_vs_full_weights")
    if fw:
        lines += ["", f"sliding_window peak memory vs full+weights at T={fw['T']} (largest T "
                      f"where full+weights fits): {fw['forward']:.0f}x lower (forward), "
                      f"{fw['forward+backward']:.0f}x lower (forward+backward)."]
    lines += ["", "## Crossover with full SDPA", "",
              "Smallest measured T from which the backend is faster (time) / lighter (memory) "
              "than full SDPA at every larger measured T; `none` = not by 16k.", "",
              "| backend | time fwd | time fwd+bwd | memory fwd | memory fwd+bwd |",
              "|---|---|---|---|---|"]
    for name, c in data["crossover"].items():
        lines.append(f"| {name} | " + " | ".join(str(c[k] or "none") for k in (
            "time_forward", "time_forward+backward", "memory_forward",
            "memory_forward+backward")) + " |")
    check = data.get("default_policy_check")
    if check:
        lines += ["", f"## Default OpenMP wait policy, T={top}, forward", "",
                  "The same two workers without `OMP_WAIT_POLICY`. With the load above the core "
                  "count, idle OpenMP workers that spin take the core from the main thread after "
                  "every parallel kernel; that costs a blocked backend (hundreds of kernels per "
                  "call) far more than SDPA (one fused kernel):", ""]
        for r in check:
            if "forward" in r:
                lines.append(f"- {r['backend']}: {r['forward']['time_s']:.3f} s, "
                             f"{r['forward']['peak_mb']:.1f} MB (load {r['load_average'][0]})")
            else:
                lines.append(f"- {r['backend']}: {r.get('skipped')}")
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, mode in enumerate(MODES):
        for row, (key, label) in enumerate((("time_s", "time (s)"), ("peak_mb", "peak MB"))):
            ax = axes[row][col]
            for name in data["contenders"]:
                pts = [(r["T"], r[mode][key]) for r in data["results"]
                       if r["backend"] == name and mode in r]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel(label)
            ax.set_title(f"{mode}: {label}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"attention op, batch 1, {HEADS} heads x {HEAD_DIM}, {THREADS} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "T"), help=argparse.SUPPRESS)
    parser.add_argument("--forward-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    parser.add_argument("--backends", nargs="+", default=None,
                        help="contenders (default: full, full+weights and every backend)")
    parser.add_argument("--max-gb", type=float, default=8.0,
                        help="skip configurations estimated to need more (default 8)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per worker")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of the workers ('' = leave as is)")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_attention.json")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the .md and .png from an existing --out JSON")
    args = parser.parse_args(argv)
    if args.report_only:
        data = json.loads(args.out.read_text())
        LENGTHS[:] = data["lengths"]
        return _report(data, args.out)
    if args.worker:
        modes = MODES[:1] if args.forward_only else MODES
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), modes)))
        return 0

    from lanistr.nn.attention import list_backends

    LENGTHS[:] = sorted(args.lengths)
    names = args.backends or ["full", "full+weights"] + [
        s.name for s in list_backends() if s.name != "full"]
    policy = args.omp_wait_policy or None
    data = {"benchmark": "long_attention", "what": "attention op only (no projections)",
            "batch": 1, "heads": HEADS, "head_dim": HEAD_DIM, "threads": THREADS,
            "omp_wait_policy": policy, "lengths": LENGTHS, "contenders": names,
            "machine": machine_info(), "load_average_before": load_average(),
            "memory_method": "VmHWM after the run minus VmRSS before it (after malloc_trim; "
                             "high-water mark reset via /proc/self/clear_refs); inputs and "
                             "warm-up not counted",
            "results": []}
    started = time.time()
    for t in LENGTHS:
        for name in names:
            if estimated_gb(name, t) > args.max_gb:
                res = {"backend": name, "T": t, "skipped": "skipped (memory)",
                       "estimated_gb": estimated_gb(name, t)}
            else:
                res = run_worker(name, t, policy, args.timeout)
            data["results"].append(res)
            summary = {m: (round(res[m]["time_s"], 3), round(res[m]["peak_mb"], 1))
                       for m in MODES if m in res} or res.get("skipped")
            print(f"[{time.time() - started:6.0f} s] T={t:5d} {name:15s} {summary} "
                  f"load={load_average()}", flush=True)
    top = LENGTHS[-1]
    if policy:  # how much the wait policy matters, at the largest length, forward only
        data["default_policy_check"] = [
            run_worker(name, top, None, args.timeout, forward_only=True)
            for name in ("full", "sliding_window")
            if name in names]
    data["load_average_after"] = load_average()
    data["ratios_at_max_T"] = ratios_at(data["results"], top)
    fits = [r for r in data["results"] if r["backend"] == "full+weights" and MODES[1] in r]
    sw = {r["T"]: r for r in data["results"] if r["backend"] == "sliding_window" and MODES[0] in r}
    if fits and fits[-1]["T"] in sw:
        t = fits[-1]["T"]
        data["sliding_window_vs_full_weights"] = {"T": t, **{
            m: fits[-1][m]["peak_mb"] / max(sw[t][m]["peak_mb"], 1e-3) for m in MODES}}
    data["crossover"] = {
        name: {f"{kind}_{mode}": crossover(data["results"], name, mode, key)
               for kind, key in (("time", "time_s"), ("memory", "peak_mb")) for mode in MODES}
        for name in names if name != "full"}
    data["total_s"] = time.time() - started
    return _report(data, write_json("long_attention", data, args.out))


def _report(data: dict, path: Path) -> int:
    from lanistr.io import write_text

    write_text(path.with_suffix(".md"), markdown(data))
    plot(data, path.with_suffix(".png"))
    print(markdown(data))
    print(f"wrote {path}, {path.with_suffix('.md')}, {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
