"""The ``lanistr`` command line: ``main(argv) -> int``.

Each command group lives in ``lanistr.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
A :class:`~lanistr.errors.LanistrError` is printed as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lanistr import __version__
from lanistr.errors import LanistrError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "config",
    "backends",
    "convert",
    "data",
    "tokenizer",
    "visualize",
    "pretrain",
    "finetune",
    "adapt",
    "evaluate",
    "predict",
    "generate",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanistr",
        description=(
            "LANISTR: build, pretrain, fine-tune and inspect Transformer-encoder language "
            "models. Run `lanistr COMMAND --help` for the options of a command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"lanistr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"lanistr.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except LanistrError as exc:
        print(f"lanistr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lanistr {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
