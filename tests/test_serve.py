"""`lanistr serve` as a real process on 127.0.0.1, driven over HTTP with httpx: every endpoint,
concurrent requests sharing forward passes, every kind of bad request answered with a 4xx JSON
error while the server stays up, SIGTERM finishing the request in flight, and the page typed
into in headless Chromium (over the DevTools protocol on a pipe)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install 'lanistr[dev]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install "
                    "'lanistr[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from tests.test_api import build_tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """``python -m lanistr serve --port 0 ...`` in a subprocess; the port is read from the
    line it prints when it listens."""

    def __init__(self, model_dir: Path, log: Path, *args: str):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lanistr", "serve", "--model", str(model_dir), "--host",
             "127.0.0.1", "--port", "0", "--device", "cpu", "--threads", "1", *args],
            stdout=subprocess.DEVNULL, stderr=self._log_file, cwd=ROOT, env=env)
        self.url = None

    def wait(self, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"on http://127\.0\.0\.1:(\d+) ", self.log.read_text())
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("serve_models"))


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    s = Server(models["classifier"], tmp_path_factory.mktemp("log") / "server.log",
               "--max-batch", "16", "--batch-wait-ms", "25", "--max-texts", "8",
               "--max-chars", "500", "--max-body-bytes", "20000", "--max-attention-tokens", "8")
    try:
        yield s.wait()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def info(client) -> dict:
    r = client.get("/v1/info")
    assert r.status_code == 200
    return r.json()


# ------------------------------------------------------------------------------ endpoints


def test_every_endpoint_of_a_classifier(client, models):
    import lanistr

    m = lanistr.load(models["classifier"])
    assert client.get("/healthz").json() == {"status": "ok"}
    i = info(client)
    assert (i["task"], i["labels"], i["max_len"], i["runtime"]) == ("classify", ["ham", "spam"],
                                                                   64, "torch")
    assert i["model"] == str(models["classifier"]) and i["limits"]["max_texts"] == 8
    texts = ["win free money now", "send the slides thursday"]
    r = client.post("/v1/classify", json={"texts": texts})
    assert r.status_code == 200
    got = r.json()["results"]
    for row, want in zip(got, m.classify(texts)):
        assert row["label"] == want["label"]
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    r = client.post("/v1/embed", json={"texts": texts})
    assert r.status_code == 200 and r.json()["dim"] == 32
    np.testing.assert_allclose(r.json()["embeddings"], m.embed(texts), atol=1e-6)
    a = client.post("/v1/attention", json={"text": "the cat sat"}).json()
    assert a["tokens"] == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    assert np.asarray(a["attentions"]).shape == (2, 4, 5, 5)
    assert a["prediction"]["label"] in ("ham", "spam")
    assert a["truncated"] is False
    cut = client.post("/v1/attention", json={"text": "the cat sat on the mat and it was good"})
    assert cut.json()["truncated"] is True and len(cut.json()["tokens"]) == 8
    v = client.post("/v1/attention", json={"text": "the cat sat", "format": "viewer"}).json()
    assert "attentions" not in v and 'id="lanistr-data"' in v["html"]
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text and "/v1/attention" in page.text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/classify", "/v1/tag", "/v1/embed", "/v1/generate", "/v1/attention",
            "/v1/info", "/healthz"} <= set(paths)


def test_concurrent_requests_are_all_answered_and_share_forward_passes(client, server):
    before = info(client)["stats"]
    texts = [f"request {i} win free money" for i in range(16)]
    results: dict[int, tuple[int, dict]] = {}
    start = threading.Barrier(16)

    def one(i):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            start.wait()
            r = c.post("/v1/classify", json={"texts": [texts[i]]})
            results[i] = (r.status_code, r.json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(16))
    assert all(code == 200 and len(body["results"]) == 1 for code, body in results.values())
    after = info(client)["stats"]
    jobs = after["jobs"] - before["jobs"]
    passes = after["forward_passes"] - before["forward_passes"]
    assert jobs == 16
    assert passes < 16, f"16 requests took {passes} forward passes: no micro-batching"
    assert after["largest_batch"] >= 2


BAD = [  # (method, path, body or raw bytes, status, words in the error)
    ("post", "/v1/classify", b"{not json", 400, "not valid JSON"),
    ("post", "/v1/classify", {"texts": "x" * 10}, 422, "texts"),
    ("post", "/v1/classify", {"texts": ["ok", 3]}, 422, "texts.1"),
    ("post", "/v1/classify", {"texts": []}, 422, "at least one"),
    ("post", "/v1/classify", {"text": ["a"]}, 422, "texts"),
    ("post", "/v1/classify", {"texts": ["a"], "extra": 1}, 422, "extra"),
    ("post", "/v1/classify", [1, 2], 422, "body"),
    ("post", "/v1/classify", {"texts": ["a"] * 9}, 413, "at most 8"),
    ("post", "/v1/classify", {"texts": ["a" * 501]}, 413, "at most 500"),
    ("post", "/v1/classify", {"texts": ["a " * 12_000]}, 413, "over 20000 bytes"),
    ("post", "/v1/attention", {"text": ["list"]}, 422, "text"),
    ("post", "/v1/attention", {"text": "a", "format": "png"}, 422, "format"),
    ("post", "/v1/generate", {"texts": ["a"]}, 400, "is a classifier: it cannot generate"),
    ("post", "/v1/tag", {"texts": ["a"]}, 400, "cannot tag"),
    ("get", "/v1/classify", None, 405, "Method Not Allowed"),
    ("get", "/v2/nothing", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), BAD,
                         ids=[f"{b[1]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_json_error_and_the_server_stays_up(client, method, path, body,
                                                                   status, says):
    if body is None:
        r = client.request(method, path)
    elif isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert says in err["error"], err
    if status == 413:
        assert err["limit"] in ("max_texts", "max_chars", "max_body_bytes") and err["max"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/classify", json={"texts": ["still fine"]}).status_code == 200


def test_a_busy_port_is_refused_in_one_line_before_the_model_loads(tmp_path, capsys):
    import socket

    from lanistr.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--model", str(tmp_path / "not-read"), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_a_full_queue_is_refused_at_once():
    from lanistr.serve.batching import MicroBatcher, QueueFull

    release = threading.Event()

    def run(task, inputs):
        release.wait(10)
        return inputs

    async def scenario():
        b = MicroBatcher(run, max_batch=1, wait_s=0, max_queue=1)
        b.start()
        first = asyncio.ensure_future(b.submit("x", [1]))
        await asyncio.sleep(0.05)  # the worker holds the first job
        second = asyncio.ensure_future(b.submit("x", [2]))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await b.submit("x", [3])
        release.set()
        assert await first == [1] and await second == [2]
        assert b.stats.rejected_queue_full == 1
        await b.stop()

    asyncio.run(scenario())


def test_a_failing_request_does_not_fail_the_others_in_its_batch():
    from lanistr.serve.batching import MicroBatcher

    calls = []

    def run(task, inputs):
        calls.append(list(inputs))
        if "bad" in inputs:
            raise ValueError("bad input")
        return [x.upper() for x in inputs]

    async def scenario():
        b = MicroBatcher(run, max_batch=8, wait_s=0.2, max_queue=8)
        b.start()
        jobs = [asyncio.ensure_future(b.submit("x", [x])) for x in ("a", "bad", "c")]
        done = await asyncio.gather(*jobs, return_exceptions=True)
        await b.stop()
        return done, b.stats

    (a, bad, c), stats = asyncio.run(scenario())
    assert (a, c) == (["A"], ["C"]) and isinstance(bad, ValueError)
    assert calls[0] == ["a", "bad", "c"] and sorted(map(tuple, calls[1:])) == [("a",), ("bad",),
                                                                               ("c",)]
    assert (stats.jobs, stats.failed) == (3, 1)


# ------------------------------------------------------ tagger, seq2seq, SIGTERM in flight


def test_tag_generate_and_sigterm_finishes_the_request_in_flight(models, tmp_path):
    import lanistr

    tagger = Server(models["tagger"], tmp_path / "tagger.log", "--batch-wait-ms", "600")
    seq2seq = Server(models["seq2seq"], tmp_path / "seq2seq.log")
    try:
        tagger.wait()
        seq2seq.wait()
        r = httpx.post(seq2seq.url + "/v1/generate", json={"texts": ["the cat sat"]}, timeout=30)
        assert r.status_code == 200
        assert r.json()["results"] == lanistr.load(models["seq2seq"]).generate(["the cat sat"])
        r = httpx.post(seq2seq.url + "/v1/classify", json={"texts": ["a"]}, timeout=30)
        assert r.status_code == 400 and "seq2seq model: it cannot classify" in r.json()["error"]
        answer = {}

        def slow():  # waits 600 ms in the batcher for company
            answer["r"] = httpx.post(tagger.url + "/v1/tag", json={"texts": ["the cat sat"]},
                                     timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 20
        while httpx.get(tagger.url + "/v1/info").json()["in_flight"] < 1:  # the request waits
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.02)
        sent = time.monotonic()
        tagger.proc.send_signal(signal.SIGTERM)
        code = tagger.proc.wait(10)
        t.join(10)
        assert time.monotonic() - sent < 5
        assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal it handled
        assert answer["r"].status_code == 200
        assert answer["r"].json()["results"][0]["words"] == ["the", "cat", "sat"]
        assert "Traceback" not in tagger.log.read_text()
    finally:
        tagger.stop()
        seq2seq.stop()


# ------------------------------------------------------------------------ the page


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4: no
    websocket library needed). Collects console errors and uncaught exceptions."""

    def __init__(self, profile: Path):
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--window-size=1200,1000", f"--user-data-dir={profile}",
                "about:blank"]

        def pipes_on_3_and_4():  # in the child, before exec (dup2 leaves them inheritable)
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)  # neither is 3 or 4 now
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *args], close_fds=False,
                                     preexec_fn=pipes_on_3_and_4, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Runtime", "Page", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, *, session: bool = False, timeout: float = 30, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false")

    def problems(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error",
                                                                                   "warning"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] in ("error",
                                                                               "warning"):
                out.append(f"log: {p['entry'].get('text')}")
        return out

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (install it with "
                    "`apt-get install -y chromium`, or `make browser`)")
def test_the_page_shows_the_prediction_and_heatmap_of_a_typed_text(server, tmp_path):
    browser = DevTools(tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=server.url + "/")
        browser.wait_for("document.body && document.body.dataset.status === 'idle' && "
                         "document.getElementById('info').textContent.includes('classify')")
        browser.js("document.getElementById('text').focus()")
        browser.call("Input.insertText", session=True, text="win free money now")
        box = browser.js("(() => { const r = document.getElementById('go')"
                         ".getBoundingClientRect(); return [r.x + r.width / 2, "
                         "r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            browser.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0],
                         y=box[1], button="left", clickCount=1)
        status = browser.wait_for("['ready', 'error'].includes(document.body.dataset.status) "
                                  "&& document.body.dataset.status")
        assert status == "ready", browser.js("document.body.dataset.error")
        seen = browser.js("""(() => {
            const d = document.getElementById('viewer').contentDocument;
            const c = d.getElementById('matrix');
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const colours = new Set();
            for (let i = 0; i < px.length; i += 4) colours.add(px[i] + ',' + px[i+1] + ',' + px[i+2]);
            return {w: c.width, h: c.height, colours: colours.size,
                    tokens: Array.from(d.querySelectorAll('.tok')).map(s => s.textContent),
                    viewer: d.body.dataset.status,
                    prediction: document.getElementById('prediction').textContent};
        })()""")
        assert seen["tokens"] == ["[CLS]", "win", "free", "money", "now", "[SEP]"]
        assert (seen["w"], seen["h"], seen["viewer"]) == (6, 6, "ready")
        assert seen["colours"] > 3  # a heatmap, not a blank canvas
        assert "Predicted:" in seen["prediction"]
        assert re.search(r"\b(ham|spam)\b", seen["prediction"])
        assert browser.problems() == []
    finally:
        browser.close()
