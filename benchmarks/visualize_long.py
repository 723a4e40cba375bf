"""Wall time of `lanistr visualize` on a 4,096-token text with the sliding_window backend.

    python benchmarks/visualize_long.py        # -> benchmarks/results/visualize_long.json

The model: the mini preset with sinusoidal positions, max_len 4096, ``sliding_window``
attention (window 256, global token 0), tokenizer and weights of ``runs/sotu-mini/model``
where they exist (else random weights and the tokenizer trained on the embedded sample). The
text: the first State of the Union address of the held-out split (2000 on), cut to 4,096
tokens. The command is run as a user runs it (a fresh process: imports and loading count),
with ``--rollout --html``, every layer and head drawn.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parents[1]


def build_model(out: Path, source: Path) -> None:
    import torch

    from lanistr import LanistrConfig
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.nn import LanistrForMaskedLM

    tokenizer = Tokenizer.from_pretrained(source)
    config = LanistrConfig.from_name(
        "mini", vocab_size=tokenizer.vocab_size, max_len=4096, position="sinusoidal",
        attention={"backend": "sliding_window", "window": 256, "global_tokens": [0]})
    torch.manual_seed(0)
    model = LanistrForMaskedLM(config)
    if (source / "model.safetensors").is_file():  # reuse what fits (no position table)
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(source / "model.safetensors").items()
                 if k in model.state_dict() and model.state_dict()[k].shape == v.shape}
        model.load_state_dict(state, strict=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(ROOT / "runs" / "sotu-mini" / "model"),
                   help="checkpoint whose tokenizer (and weights) to use")
    p.add_argument("--work", default="/tmp/lanistr-visualize-long")
    p.add_argument("--tokens", type=int, default=4096)
    args = p.parse_args(argv)
    from lanistr.data.fetch import dataset_dir, embedded_path

    work = Path(args.work)
    source = Path(args.source)
    if not (source / "config.json").is_file():
        from lanistr.data.tokenizer import train_tokenizer

        source = work / "tokenizer"
        train_tokenizer([embedded_path("sotu_sample.txt")], 8000, source)
    model_dir = work / "model"
    build_model(model_dir, source)
    try:
        speeches = dataset_dir("sotu") / "test.txt"
        text = speeches.read_text(encoding="utf-8").split("\n\n")[0]
    except Exception:  # noqa: BLE001 - not fetched: the embedded sample
        text = embedded_path("sotu_sample.txt").read_text(encoding="utf-8")
    text = " ".join(text.split()[: args.tokens])  # words >= tokens; visualize cuts at max_len
    out = work / "viz"
    cmd = [sys.executable, "-m", "lanistr", "visualize", "--model", str(model_dir), "--text",
           text, "--output", str(out), "--max-len", str(args.tokens), "--rollout", "--html",
           "--overwrite"]
    load = _common.load_average()
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    pngs = sorted(out.glob("*.png"))
    result = {
        "tokens": summary["num_tokens"], "backend": summary["backend"],
        "wall_s": wall, "seconds_inside": summary["seconds"], "files": len(summary["files"]),
        "png_bytes_min": min(f.stat().st_size for f in pngs), "target_s": 60,
        "meets_target": wall < 60, "load_average_before": load,
        "load_average_after": _common.load_average(), "machine": _common.machine_info(),
    }
    path = _common.write_json("visualize_long", result)
    print(f"{summary['num_tokens']} tokens, {len(summary['files'])} files in {wall:.1f} s "
          f"(load {load[0]:.2f}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
