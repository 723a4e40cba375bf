"""``lanistr serve``: an HTTP API (FastAPI + uvicorn) over one loaded checkpoint, with dynamic
micro-batching (:mod:`lanistr.serve.batching`), request limits and the attention page
(:mod:`lanistr.serve.page`). Needs the ``serve`` extra: ``pip install "lanistr[serve]"``.

>>> import lanistr
>>> from lanistr.serve import create_app, ServeSettings
>>> app = create_app(lanistr.load("runs/spam/model"), ServeSettings(max_batch=16))
"""

from __future__ import annotations


def __getattr__(name: str):
    # Lazy: `import lanistr.serve` must not need fastapi until the app is built.
    if name in ("ServeSettings", "create_app", "serve"):
        from lanistr.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'lanistr.serve' has no attribute {name!r}")


__all__ = ["ServeSettings", "create_app", "serve"]
