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
