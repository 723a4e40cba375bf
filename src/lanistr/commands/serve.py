"""`lanistr serve`: an HTTP API and the attention page for one checkpoint."""

from __future__ import annotations

import argparse
import sys

from lanistr.commands import add_model_args, add_runtime_args, model_overrides, positive_int

EPILOG = """\
endpoints (JSON in, JSON out; OpenAPI at /docs):
  POST /v1/classify /v1/tag /v1/embed /v1/generate   {"texts": ["...", ...]}
  POST /v1/attention                                 {"text": "...", "format": "lists"|"viewer"}
  GET  /v1/info  /healthz  /  (the attention page: type a text, see the prediction and heads)

Requests arriving within --batch-wait-ms of each other share one forward pass (up to
--max-batch texts); more than --max-queue waiting requests get 503. Errors are JSON
{"error": ...} with a 4xx status. SIGTERM or Ctrl-C finishes the requests in flight, then
exits.

example:
  lanistr serve --model runs/spam/model --port 8000
  curl -s localhost:8000/v1/classify -d '{"texts": ["WIN a FREE cruise now!!!"]}'
"""


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over HTTP (classify, tag, embed, generate, attention)",
        description="Load a checkpoint once and answer HTTP requests (FastAPI + uvicorn; "
                    "install the serve extra: pip install 'lanistr[serve]').",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, "checkpoint directory (or an ONNX export with --runtime onnx)")
    add_runtime_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000,
                   help="TCP port (default 8000; 0: a free one, printed when serving)")
    p.add_argument("--max-batch", type=positive_int, default=32, metavar="N",
                   help="texts per forward pass; 1 turns micro-batching off (default 32)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a request waits for others to share its pass (default 5)")
    p.add_argument("--max-queue", type=positive_int, default=256, metavar="N",
                   help="requests waiting for the model before new ones get 503 (default 256)")
    p.add_argument("--max-texts", type=positive_int, default=64, metavar="N",
                   help="texts per request (default 64)")
    p.add_argument("--max-chars", type=positive_int, default=20_000, metavar="N",
                   help="characters per text (default 20000)")
    p.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, metavar="N",
                   help="request body size (default 1 MiB)")
    p.add_argument("--max-attention-tokens", type=positive_int, default=128, metavar="N",
                   help="/v1/attention and the page read at most N tokens of a text (the "
                        "weights grow as N squared; default 128)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch CPU threads for the model (default: torch's choice)")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning)")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.errors import LanistrError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise LanistrError(f"lanistr serve needs the serve extra ({exc.name} is missing): "
                           "pip install 'lanistr[serve]'") from None
    if not 0 <= args.port <= 65535:
        raise LanistrError(f"--port {args.port} must be between 0 and 65535")
    check_address(args.host, args.port)  # before the model loads
    from lanistr import api
    from lanistr.serve.app import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                             max_queue=args.max_queue, max_texts=args.max_texts,
                             max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
                             max_attention_tokens=args.max_attention_tokens)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = model_overrides(args)
    model = api.load(args.model, device=args.device or "auto", runtime=args.runtime,
                     **({"overrides": overrides} if overrides else {}))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this server (no "
              "authentication)", file=sys.stderr)

    def ready(port: int) -> None:
        print(f"serving {model.model_dir} ({model.task}, {model.device}) on "
              f"http://{args.host}:{port} (API docs at /docs); Ctrl-C to stop",
              file=sys.stderr, flush=True)

    serve(model, settings, host=args.host, port=args.port, log_level=args.log_level,
          on_ready=ready)
    return 0


def check_address(host: str, port: int) -> None:
    """Refuse at once, in one line, an address this process cannot listen on (uvicorn would
    say so only after the model has loaded)."""
    import socket

    from lanistr.errors import LanistrError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LanistrError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(address)
        except OSError as exc:
            hint = "choose another --port (0 picks a free one)" if port else "check --host"
            raise LanistrError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
