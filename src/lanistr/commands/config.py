"""`lanistr config show`: print a resolved model config as YAML."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("config", help="show a resolved model config (presets, files, overrides)",
                       description="Inspect model configurations.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser(
        "show", help="print the resolved config as YAML",
        description="Resolve a preset and/or a config file plus --set overrides and print the "
                    "model config as YAML. Example: lanistr config show --preset mini "
                    "--set hidden_size=128 --set attention.backend=sliding_window")
    show.add_argument("--preset", help="tiny, mini, small, base or lanistr (the original design)")
    show.add_argument("--config", help="a YAML/JSON file: a model section, or a whole run config "
                                       "with a `model:` section")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field, e.g. num_layers=2 or model.num_layers=2 "
                           "(repeatable)")
    show.set_defaults(func=run_show)


def run_show(args) -> int:
    from lanistr.config import (
        LanistrConfig,
        apply_overrides,
        dump_yaml,
        load_config_file,
    )

    data: dict = {}
    if args.config:
        data = load_config_file(args.config)
        data = data.get("model", data) if isinstance(data.get("model"), dict) else data
    if args.preset:
        data = {"preset": args.preset, **data}
    sets = [s[len("model."):] if s.startswith("model.") else s for s in args.set]
    apply_overrides(data, sets)
    if not data:
        data = {"preset": "mini"}
    config = LanistrConfig.from_any(data)
    print(dump_yaml(config.to_dict()), end="")
    return 0
