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
    add_device_arg(parser, training=True)
    add_progress_args(parser)
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
    implied = ["train.overwrite_output=true"] if args.overwrite else []
    if getattr(args, "device", None):
        implied.append(f"train.device={args.device}")
    if getattr(args, "progress", None) is not None:
        implied.append(f"train.progress={str(args.progress).lower()}")
    return [*args.set, *implied]


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


def add_model_args(parser, what: str = "fine-tuned model directory") -> None:
    """What every command that loads a trained model shares: ``--model DIR``, ``--set
    model.KEY=VALUE`` overrides of its config for this run (e.g. another attention backend)
    and ``--device``."""
    parser.add_argument("--model", required=True, metavar="DIR", help=what)
    parser.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                        help="change a field of the model's config for this run, e.g. "
                             "model.attention.backend=sliding_window (repeatable)")
    add_device_arg(parser)


def add_device_arg(parser, training: bool = False) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        default=None if training else "auto",
                        help="where to run: auto = a CUDA GPU when there is one, else the CPU"
                             + (" (sets train.device)" if training else " (default: auto)"))


def add_progress_args(parser) -> None:
    """``--progress`` / ``--no-progress``; without either, a bar is shown when stderr is a
    terminal."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="show progress bars (default: when stderr is a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bars")


def progress_enabled(args) -> bool:
    import sys

    flag = getattr(args, "progress", None)
    return sys.stderr.isatty() if flag is None else bool(flag)


def model_overrides(args) -> dict:
    """``--set model.KEY=VALUE`` items as nested config overrides: ``{"attention":
    {"backend": "sliding_window"}}``. Only ``model.`` keys apply to a trained model."""
    from lanistr.config import apply_overrides
    from lanistr.errors import ConfigError

    sets = list(getattr(args, "set", None) or [])
    for item in sets:
        key = item.partition("=")[0].strip()
        if not key.startswith("model.") or key == "model.":
            raise ConfigError(f"--set {item}: only model.KEY=VALUE applies here (the trained "
                              "model's config, e.g. model.attention.backend=sliding_window)")
    data: dict = {}
    apply_overrides(data, sets)
    return data.get("model") or {}


def resolve_device(name: str | None):
    """``--device`` -> a torch device (see :func:`lanistr.distributed.resolve_device`)."""
    from lanistr.distributed import resolve_device as resolve

    return resolve(name)


def held_out_line(metrics: dict, label: str = "held-out") -> str:
    """``held-out: loss=..., accuracy=...`` from a run's final ``eval_*`` metrics."""
    return f"{label}: " + ", ".join(f"{k[5:]}={v:.4f}" for k, v in metrics.items())
