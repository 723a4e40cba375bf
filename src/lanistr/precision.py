"""Training precision: fp32, bf16 autocast, or ``auto`` (bf16 where the device computes it
natively, else fp32).

bf16 autocast runs matrix products in bfloat16 and keeps the weights, the optimizer state,
LayerNorm and softmax in float32. On a CPU with AVX512-BF16 or AMX instructions a bf16
matrix product is about 2.4x faster than a float32 one (measured on this project's 2-core
AMD EPYC: 384 x 1,536 products); without them torch emulates bf16 and it is slower, so
``auto`` picks bf16 only where the instructions are there. Measured on that machine with 2
threads (``benchmarks/results/precision.json``): a MiniLM fine-tuning step (top 2 layers, 16 x
256 tokens) 1.53x faster, a ``lanistr pretrain`` step 1.46x; 2,000 20 Newsgroups posts
fine-tuned end to end in 228 s instead of 378 s at the same held-out accuracy (0.839 vs 0.837).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports (empty where it reports none, or the OS has no
    /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def resolve(name: str, device: torch.device) -> tuple[str, str]:
    """``(precision, why)``: ``fp32`` or ``bf16`` for the configured ``name`` on ``device``."""
    if name != "auto":
        return name, f"train.precision={name}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU computes bf16 natively"
        return "fp32", "auto: this GPU has no native bf16"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return "bf16", f"auto: this CPU computes bf16 natively ({', '.join(flags)})"
        return "fp32", "auto: this CPU has no native bf16 (no avx512_bf16/amx_bf16)"
    return "fp32", f"auto: fp32 on {device.type}"


def describe(precision: str, device: torch.device) -> str:
    """One log line on a resolved ``precision`` and what ``device`` makes of it."""
    if precision != "bf16":
        return "precision fp32"
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        native = (f"this CPU computes bf16 natively ({', '.join(flags)})" if flags else
                  "this CPU has no native bf16: torch emulates it, slower than fp32")
    else:
        native = f"on {device.type}"
    return ("precision bf16 autocast (matrix products in bfloat16; weights, optimizer state, "
            f"LayerNorm and softmax in float32; {native})")


def autocast(precision: str, device: torch.device):
    """The context a forward pass runs in for a resolved ``precision``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
