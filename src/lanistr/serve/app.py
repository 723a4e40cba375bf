"""The HTTP API of ``lanistr serve`` (FastAPI): one loaded :class:`~lanistr.api.InferenceModel`
behind a :class:`~lanistr.serve.batching.MicroBatcher`.

=========================  ===============================================================
``POST /v1/classify``      ``{"texts": [...]}`` -> ``{"results": [{"label", "score",
                           "probabilities"}]}``
``POST /v1/tag``           ``{"texts": [...]}`` -> ``{"results": [{"words", "tags"}]}``
``POST /v1/embed``         ``{"texts": [...]}`` -> ``{"embeddings": [[...]], "dim"}``
``POST /v1/generate``      ``{"texts": [...]}`` -> ``{"results": ["..."]}``
``POST /v1/attention``     ``{"text": "...", "format": "lists" | "viewer"}`` -> tokens,
                           prediction, and ``attentions`` (lists) or ``html`` (the viewer)
``GET /v1/info``           model, task, labels, max_len, runtime, limits, batching stats
``GET /healthz``           ``{"status": "ok"}``
``GET /``                  the attention page; ``/docs``: OpenAPI
=========================  ===============================================================

Every error is JSON ``{"error": "..."}`` with a 4xx status (``"limit"`` names the limit a
request went over): 400 bad JSON or an endpoint this model does not support, 413 a body,
text count or text length over its limit, 422 wrong types or an empty list, 503 the queue is
full. Nothing here imports torch: the model is loaded by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from typing import Literal

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from lanistr.errors import LanistrError
from lanistr.serve.batching import MicroBatcher, QueueFull
from lanistr.serve.page import render_page


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server (``lanistr serve`` flags)."""

    max_batch: int = 32  # texts per forward pass (1: no micro-batching)
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_queue: int = 256  # requests waiting for the model; beyond: 503
    max_texts: int = 64  # texts per request; beyond: 413
    max_chars: int = 20_000  # characters per text; beyond: 413
    max_body_bytes: int = 1 << 20  # request body; beyond: 413
    max_attention_tokens: int = 128  # /v1/attention reads at most this many tokens

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_texts", "max_chars", "max_body_bytes",
                     "max_attention_tokens"):
            if getattr(self, name) < 1:
                raise LanistrError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise LanistrError(f"batch_wait_ms={self.batch_wait_ms} must be between 0 and 1000")


# -- request bodies (they make the OpenAPI schema at /docs) -----------------------------------


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(description="the texts, at least one",
                                   examples=[["WIN a FREE cruise now!!!"]])


class AttentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr = Field(description="one text", examples=["a gripping, funny film"])
    format: Literal["lists", "viewer"] = Field(
        "lists", description="lists: attentions[layer][head][query][key]; viewer: the "
                             "self-contained HTML viewer page instead")


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _error(status: int, message: str, **extra) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        too_large = _error(413, f"the request body is over {self.max_bytes} bytes",
                           limit="max_body_bytes", max=self.max_bytes)
        try:
            if length is not None and int(length) > self.max_bytes:
                return await too_large(scope, receive, send)
        except ValueError:
            return await _error(400, "bad Content-Length header")(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def create_app(model, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` (a :class:`lanistr.api.InferenceModel`)."""
    settings = settings or ServeSettings()
    info = model.info()

    def run(task: str, inputs: list) -> list:  # in the model thread
        size = max(1, len(inputs))
        if task == "classify":
            return model.classify(inputs, batch_size=size)
        if task == "tag":
            return model.tag(inputs, batch_size=size)
        if task == "generate":
            return model.generate(inputs, batch_size=size)
        if task == "embed":
            return [row.tolist() for row in model.embed(inputs, batch_size=size)]
        if task == "attention":
            return [model.attention(text, weights=fmt == "lists", html=fmt == "viewer",
                                    max_tokens=settings.max_attention_tokens)
                    for text, fmt in inputs]
        raise LanistrError(f"unknown task {task!r}")

    batcher = MicroBatcher(run, max_batch=settings.max_batch,
                           wait_s=settings.batch_wait_ms / 1000.0, max_queue=settings.max_queue,
                           unbatched=("attention",))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title=f"lanistr: {info['model']}",
        description=f"A lanistr {info['task']} model ({info['architecture']}); "
                    f"supports {', '.join(info['capabilities'])}.",
        version=_version(), lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.batcher = batcher
    app.state.model = model

    # -- errors: every one is JSON {"error": ...} -------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            ctx = detail.get("ctx") or {}
            return _error(400, f"the body is not valid JSON ({ctx.get('error', 'parse error')})")
        problems = []
        for e in errors:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            problems.append({"field": where, "problem": str(e.get("msg", "invalid"))})
        text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return _error(422, text, problems=problems[:20])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(LanistrError)
    async def _lanistr(request, exc: LanistrError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    # -- helpers ----------------------------------------------------------------------------

    def check_texts(texts: list[str]) -> None:
        if not texts:
            raise ApiError(422, "texts: give at least one text", limit="min_texts", min=1)
        if len(texts) > settings.max_texts:
            raise ApiError(413, f"texts: {len(texts)} texts, at most {settings.max_texts} per "
                                "request", limit="max_texts", max=settings.max_texts)
        check_lengths(texts, "texts")

    def check_lengths(texts: list[str], field: str) -> None:
        for i, t in enumerate(texts):
            if len(t) > settings.max_chars:
                raise ApiError(413, f"{field}[{i}]: {len(t)} characters, at most "
                                    f"{settings.max_chars}", limit="max_chars",
                               max=settings.max_chars)

    def check_supported(task: str) -> None:
        try:
            model.require(task)
        except LanistrError as exc:
            raise ApiError(400, str(exc), capabilities=list(model.capabilities)) from None

    async def answer(task: str, texts: list[str]) -> list:
        """A texts endpoint: refuse what the model cannot do or a bad list, then batch it."""
        check_supported(task)
        check_texts(texts)
        return await submit(task, texts)

    async def submit(task: str, inputs: list) -> list:
        try:
            return await batcher.submit(task, inputs)
        except QueueFull:
            raise ApiError(503, f"the server is busy ({settings.max_queue} requests waiting); "
                                "retry shortly", limit="max_queue",
                           max=settings.max_queue) from None

    # -- endpoints --------------------------------------------------------------------------

    @app.get("/healthz", summary="liveness")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/info", summary="the model, its limits and batching statistics")
    async def v1_info():
        return {**info, "limits": asdict(settings), "queue": batcher.pending(),
                "in_flight": batcher.in_flight,
                "stats": batcher.stats.as_dict()}

    @app.post("/v1/classify", summary="label and probabilities of each text")
    async def v1_classify(body: TextsRequest):
        return {"results": await answer("classify", body.texts)}

    @app.post("/v1/tag", summary="a tag for each whitespace-separated word")
    async def v1_tag(body: TextsRequest):
        return {"results": await answer("tag", body.texts)}

    @app.post("/v1/generate", summary="output text of each source (seq2seq models)")
    async def v1_generate(body: TextsRequest):
        return {"results": await answer("generate", body.texts)}

    @app.post("/v1/embed", summary="sentence embeddings (mean-pooled, L2-normalised)")
    async def v1_embed(body: TextsRequest):
        rows = await answer("embed", body.texts)
        return {"embeddings": rows, "dim": len(rows[0]) if rows else 0}

    @app.post("/v1/attention", summary="tokens, prediction and attention weights of one text")
    async def v1_attention(body: AttentionRequest):
        check_supported("attention")
        check_lengths([body.text], "text")
        (result,) = await submit("attention", [(body.text, body.format)])
        return result

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(render_page(f"lanistr: {info['model']} ({info['task']})"))

    return app


def _version() -> str:
    from lanistr import __version__

    return __version__


def serve(model, settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "warning", on_ready=None) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM (requests in flight are finished
    first). ``on_ready(port)`` is called once the socket listens."""
    import uvicorn

    app = create_app(model, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=30, lifespan="on")
    server = uvicorn.Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets=sockets)
            if server.started:  # the port actually bound (``port=0`` picks a free one)
                bound = [s.getsockname()[1] for srv in server.servers for s in srv.sockets]
                on_ready(bound[0] if bound else port)

        server.startup = startup
    asyncio.run(server.serve())


__all__ = ["ServeSettings", "create_app", "serve"]
