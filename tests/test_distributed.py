"""Data-parallel training under real torchrun (2 processes, gloo) equals one process."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from tests.helpers import pretrain_sets, read_metric

from lanistr.checkpoint import read_weights
from lanistr.cli import main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def torchrun(nproc: int, args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "lanistr", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def cli_args(sets):
    out = []
    for s in sets:
        out += ["--set", s]
    return out


def test_two_ranks_equal_one_rank_with_double_batch_and_resume_across_rank_counts(tmp_path):
    common = pretrain_sets(tmp_path, max_steps=10, save_every=5, eval_every=5, keep_last=5,
                           precision="fp32")  # bf16 rounds differently batch by batch
    # 2 ranks x batch 4 ...
    proc = torchrun(2, ["pretrain", "--output", str(tmp_path / "ddp"),
                        *cli_args(common + ["train.batch_size=4"])])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 per rank x 2 ranks x 1 accumulation = 8 examples" in proc.stderr
    # ... equal 1 rank x batch 8.
    assert main(["pretrain", "--output", str(tmp_path / "one"),
                 *cli_args(common + ["train.batch_size=8"])]) == 0
    ddp, one = read_metric(tmp_path / "ddp", "loss"), read_metric(tmp_path / "one", "loss")
    assert len(ddp) == len(one) == 10
    assert max(abs(a - b) for a, b in zip(ddp, one)) < 1e-5
    a, b = read_weights(tmp_path / "ddp" / "model"), read_weights(tmp_path / "one" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    # Distributed evaluation (sums and counts all-reduced) equals single-process evaluation.
    for name in ("eval_mlm_loss", "eval_mlm_accuracy"):
        for x, y in zip(read_metric(tmp_path / "ddp", name), read_metric(tmp_path / "one", name)):
            assert abs(x - y) < 1e-5

    # Resume the 2-rank checkpoint of step 5 on 1 rank: same trajectory as the 1-rank run.
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copytree(tmp_path / "ddp" / "checkpoints" / "step-0000005", resumed / "step-0000005")
    assert main(["pretrain", "--output", str(tmp_path / "resumed"), "--resume",
                 *cli_args(common + ["train.batch_size=8"])]) == 0
    tail = read_metric(tmp_path / "resumed", "loss")
    assert len(tail) == 5 and max(abs(x - y) for x, y in zip(tail, one[5:])) < 1e-5
    c = read_weights(tmp_path / "resumed" / "model")
    for k in b:
        torch.testing.assert_close(c[k], b[k], atol=1e-5, rtol=0)


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    common = pretrain_sets(tmp_path, max_steps=4, eval_every=0, precision="fp32")
    assert main(["pretrain", "--output", str(tmp_path / "acc"),
                 *cli_args(common + ["train.batch_size=4", "train.grad_accum=2"])]) == 0
    assert main(["pretrain", "--output", str(tmp_path / "big"),
                 *cli_args(common + ["train.batch_size=8"])]) == 0
    acc, big = read_metric(tmp_path / "acc", "loss"), read_metric(tmp_path / "big", "loss")
    assert max(abs(x - y) for x, y in zip(acc, big)) < 1e-5


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_a_dead_rank_stops_the_run_without_a_hang_and_checkpoints_stay_intact(tmp_path):
    import signal
    import time

    sets = pretrain_sets(tmp_path, max_steps=100000, save_every=2, eval_every=0, batch_size=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "lanistr", "pretrain", "--output", str(tmp_path / "run"), *cli_args(sets)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and not any(ckpts.glob("step-*")):
        time.sleep(0.5)
    assert any(ckpts.glob("step-*")), "no checkpoint was written"
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGKILL)  # one rank dies hard
    killed = time.time()
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.time() - killed < 60
    for ck in ckpts.glob("step-*"):
        read_weights(ck)  # every checkpoint left behind is complete and loadable


def test_finetune_under_torchrun_equals_one_process(tmp_path):
    import json
    import random

    from lanistr.data.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = {"fruit": "apple banana cherry grape lemon".split(), "stone": "rock iron steel sand clay".split()}
    rows = []
    for _ in range(40):
        label = rng.choice(sorted(words))
        rows.append({"text": " ".join(rng.choice(words[label]) for _ in range(rng.randint(3, 8))),
                     "label": label})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(r["text"] for r in rows), encoding="utf-8")
    train_tokenizer([corpus], 60, tmp_path / "tok")
    sets = ["task=classify", "init=scratch", f"data.tokenizer={tmp_path / 'tok'}",
            f"data.train={data}", f"data.eval={data}", "data.max_len=16", "model.preset=tiny",
            "train.lr=3e-3", "train.max_steps=8", "train.eval_every=4", "train.progress=false",
            "train.precision=fp32"]
    proc = torchrun(2, ["finetune", "--output", str(tmp_path / "ddp"),
                        *cli_args(sets + ["train.batch_size=4"])])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["finetune", "--output", str(tmp_path / "one"),
                 *cli_args(sets + ["train.batch_size=8"])]) == 0
    ddp, one = read_metric(tmp_path / "ddp", "loss"), read_metric(tmp_path / "one", "loss")
    assert len(ddp) == 8 and max(abs(a - b) for a, b in zip(ddp, one)) < 1e-5
    for name in ("eval_accuracy", "eval_loss"):
        assert len(read_metric(tmp_path / "ddp", name)) == 2
        assert read_metric(tmp_path / "ddp", name) == pytest.approx(read_metric(tmp_path / "one", name), abs=1e-5)
