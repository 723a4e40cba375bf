"""The ``lanistr`` command line: ``main(argv) -> int``.

Each command group lives in ``lanistr.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

:func:`main` is the one error boundary. A :class:`~lanistr.errors.LanistrError`, a bad
argument and an ``OSError`` on a path (permission, disk full, a file where a directory
should be) print one line and exit with code 2. Anything else is a bug: one line names it and
the file holding its traceback (``LANISTR_DEBUG=1`` prints the traceback instead), exit code
1. Ctrl-C and SIGTERM exit with 128 + the signal number. A training command (one that takes
``add_run_args``) runs inside :func:`lanistr.rundir.claim`: its ``--output`` is checked and
locked before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from lanistr import __version__
from lanistr.errors import LanistrError

# Order is the order shown in --help.
COMMAND_MODULES = [
    "config",
    "backends",
    "convert",
    "export",
    "data",
    "tokenizer",
    "visualize",
    "pretrain",
    "finetune",
    "adapt",
    "distill",
    "evaluate",
    "predict",
    "generate",
    "embed",
    "serve",
    "demo",
]


class Parser(argparse.ArgumentParser):
    """An argument error on one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error (printed already)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    name = command_name(args)
    try:
        with _claim_output(args, name):
            return int(args.func(args) or 0)
    except LanistrError as exc:
        print(f"lanistr {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:
            return _internal_error(name, exc)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"lanistr {name}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", 2)
        print(f"lanistr {name}: interrupted" + (" (SIGTERM)" if signum == 15 else ""),
              file=sys.stderr)
        return 128 + signum
    except Exception as exc:  # a bug: one line here, the traceback in a file
        return _internal_error(name, exc)


def command_name(args) -> str:
    """``pretrain``, ``tokenizer train``, ``adapt dapt``: the words that chose the command."""
    words = [args.command]
    for key, value in vars(args).items():
        if key.endswith("_command") and isinstance(value, str):
            words.append(value)
    return " ".join(words)


def _claim_output(args, name: str):
    """A training command's ``--output``: checked, and locked for the run (lanistr.rundir)."""
    if not getattr(args, "claims_output", False):
        return contextlib.nullcontext()
    from lanistr.commands import wants_overwrite
    from lanistr.rundir import claim

    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the lock
        return contextlib.nullcontext()
    return claim(args.output, resume=args.resume, overwrite=wants_overwrite(args),
                 command=f"lanistr {name}")


def _internal_error(name: str, exc: BaseException) -> int:
    if os.environ.get("LANISTR_DEBUG", "") not in ("", "0"):
        raise exc
    import datetime
    import tempfile
    import traceback

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(tempfile.gettempdir(), f"lanistr-error-{stamp}-{os.getpid()}.txt")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"lanistr {__version__}: lanistr {name}\n{text}")
        where = f"traceback in {path}"
    except OSError:
        where = "the traceback could not be written"
    summary = str(exc).splitlines()[0] if str(exc) else ""
    print(f"lanistr {name}: internal error: {type(exc).__name__}"
          + (f": {summary}" if summary else "")
          + f" ({where}; LANISTR_DEBUG=1 prints it; please report it)", file=sys.stderr)
    return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one clean line (not Python's file:line plus a source line)."""
    text = " ".join(str(message).split())
    print(f"lanistr: warning: {text}", file=file or sys.stderr)


def entry() -> None:
    """The console script (and ``python -m lanistr``): warnings print as one line."""
    import warnings

    warnings.showwarning = _show_warning
    sys.exit(main())
