"""train.precision: auto resolves to bf16 only where the device computes bf16 natively, the
run records what it resolved to, and an explicit setting always wins."""

from __future__ import annotations

import pytest
import torch

from lanistr import precision
from lanistr.tasks.run_config import parse_run

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(flags):
        monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: tuple(flags))
    return set_flags


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(cpu_flags):
    cpu_flags(["avx512_bf16"])
    assert precision.resolve("auto", CPU) == (
        "bf16", "auto: this CPU computes bf16 natively (avx512_bf16)")
    cpu_flags([])
    got, why = precision.resolve("auto", CPU)
    assert got == "fp32" and "no native bf16" in why
    # an explicit choice is kept whatever the CPU
    assert precision.resolve("bf16", CPU)[0] == "bf16"
    cpu_flags(["amx_bf16"])
    assert precision.resolve("fp32", CPU)[0] == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"
                    "processor\t: 1\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16\n")
    real = precision.Path

    def fake_path(p):
        return info if str(p) == "/proc/cpuinfo" else real(p)

    precision.cpu_bf16_flags.cache_clear()
    monkeypatch.setattr(precision, "Path", fake_path)
    try:
        assert precision.cpu_bf16_flags() == ("avx512_bf16", "amx_bf16")
        info.write_text("flags\t: fpu sse avx2\n")
        precision.cpu_bf16_flags.cache_clear()
        assert precision.cpu_bf16_flags() == ()
    finally:
        precision.cpu_bf16_flags.cache_clear()


def test_autocast_runs_products_in_bf16_only_when_asked():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with precision.autocast("bf16", CPU):
        assert lin(x).dtype == torch.bfloat16
    with precision.autocast("fp32", CPU):
        assert lin(x).dtype == torch.float32


def _data(tmp_path):
    import json

    from lanistr.data.tokenizer import train_tokenizer

    rows = [{"text": f"{w} {w} thing", "label": "ab"[i % 2]}
            for i, w in enumerate("red blue green gold iron tin".split() * 4)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(r["text"] for r in rows), encoding="utf-8")
    train_tokenizer([corpus], 40, tmp_path / "tok")
    return train, corpus, tmp_path / "tok"


def test_task_defaults_ask_for_auto_and_explicit_settings_win(tmp_path):
    train, corpus, tok = _data(tmp_path)
    base = {"init": "scratch", "model": {"preset": "tiny"},
            "data": {"train": str(train), "tokenizer": str(tok)}}
    assert parse_run("finetune", base).train.precision == "auto"
    assert parse_run("pretrain", {"data": {"train": [str(corpus)]}}).train.precision == "auto"
    given = {**base, "train": {"precision": "fp32"}}
    assert parse_run("finetune", given).train.precision == "fp32"
    # adversarial adaptation is not measured in bf16: it stays fp32 unless asked
    dann = {**base, "dann": {"target": str(corpus)}}
    assert parse_run("dann", dann).train.precision == "fp32"


@pytest.mark.parametrize("flags, expect", [(["avx512_bf16"], "bf16"), ([], "fp32")])
def test_a_run_records_the_precision_auto_resolved_to(tmp_path, cpu_flags, flags, expect):
    import yaml

    from lanistr.cli import main

    cpu_flags(flags)
    train, _, tok = _data(tmp_path)
    out = tmp_path / "run"
    argv = ["finetune", "--output", str(out), "--set", "init=scratch",
            "--set", "model.preset=tiny", "--set", f"data.tokenizer={tok}",
            "--set", f"data.train={train}", "--set", "train.epochs=1",
            "--set", "train.progress=false", "--set", "train.num_threads=1"]
    assert main(argv) == 0
    recorded = yaml.safe_load((out / "run_config.yaml").read_text())["train"]["precision"]
    assert recorded == expect
    assert f"precision {expect}" in (out / "train.log").read_text()
