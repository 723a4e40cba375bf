"""`lanistr backends`: the attention registry and what each backend can do."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("backends", help="list attention backends and their capabilities",
                       description="Print every registered attention backend: padding masks, "
                                   "causal masking, cross-attention, whether and in which form "
                                   "it returns attention weights, its cost and its parameters "
                                   "(set them with --set model.attention.NAME=VALUE).")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.nn.attention import backends_table

    print(backends_table())
    return 0
