"""CLI command groups; each module exposes ``register(subparsers)``."""


def add_run_args(parser, config_help: str, example_override: str,
                 no_truncate: bool = False) -> None:
    """The arguments every training command shares: a run config, ``--set`` overrides,
    the output directory and ``--resume`` (and ``--no-truncate`` where inputs are labelled
    texts)."""
    parser.add_argument("--config", help=f"YAML/JSON run config (see {config_help})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. {example_override} (repeatable)")
    parser.add_argument("--output", required=True,
                        help="output directory (checkpoints, logs, model)")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from the latest checkpoint in --output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace another run's metrics and checkpoints in --output "
                             "(without it, a fresh run there is refused)")
    if no_truncate:
        parser.add_argument("--no-truncate", action="store_true",
                            help="fail on an example longer than data.max_len instead of "
                                 "cutting it")
    # lanistr.cli checks and locks --output before the command runs (lanistr.rundir.claim)
    parser.set_defaults(claims_output=True)


def wants_overwrite(args) -> bool:
    """Whether a training command may replace another run in ``--output``: ``--overwrite``,
    or ``train.overwrite_output`` true in ``--set`` or the ``--config`` file."""
    if getattr(args, "overwrite", False):
        return True
    value = None
    if getattr(args, "config", None):
        from lanistr.config import load_config_file
        from lanistr.errors import LanistrError

        try:
            data = load_config_file(args.config)
        except (LanistrError, OSError):
            data = {}  # reported by the command itself
        train = data.get("train") if isinstance(data, dict) else None
        value = train.get("overwrite_output") if isinstance(train, dict) else None
    for item in getattr(args, "set", None) or []:
        key, _, text = item.partition("=")
        if key.strip() == "train.overwrite_output":
            value = text.strip()
    return str(value).lower() in ("true", "1", "yes", "on")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
    return value


def run_sets(args) -> list[str]:
    """The ``--set`` overrides of a training command, with the ones its flags imply."""
    return [*args.set, *(["train.overwrite_output=true"] if args.overwrite else [])]


def add_windows_args(parser) -> None:
    """``--windows`` / ``--stride`` of the commands that classify (evaluate, predict)."""
    parser.add_argument("--windows", action="store_true",
                        help="classify a text longer than the model's max_len from all its "
                             "max_len windows (mean of their logits) instead of its first "
                             "max_len tokens")
    parser.add_argument("--stride", type=int,
                        help="with --windows: tokens between window starts (default: half a "
                             "window)")


def add_runtime_args(parser) -> None:
    """``--runtime`` of the commands that run a fine-tuned model (evaluate, predict)."""
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch: --model is a lanistr checkpoint; onnx: --model is the "
                             "directory written by `lanistr export --format onnx` (or one "
                             ".onnx file in it, e.g. model.int8.onnx), run by onnxruntime")


# --------------------------------------------------------------------------- shared flags
