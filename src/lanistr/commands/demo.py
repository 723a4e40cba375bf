"""`lanistr demo`: the end-to-end tour on the embedded sample (being written)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on the embedded sample")
    p.add_argument("--output", default="demo-output", help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.errors import LanistrError

    raise LanistrError("the demo is not written yet")
