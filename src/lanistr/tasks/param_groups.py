"""Which parameters train, and at which learning rate: layer freezing and layer-wise
learning-rate decay groups."""

from __future__ import annotations

import re

from torch import nn

from lanistr.errors import ConfigError


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, l for encoder layer l-1, num_layers + 1 for the rest (heads)."""
    if ".embeddings." in f".{name}":
        return 0
    match = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, decay: float):
    """Parameter groups with ``lr * decay ** (L + 1 - depth)`` (ELECTRA/BEiT-style layer-wise
    decay), no weight decay on biases and LayerNorms, frozen parameters left out."""
    top = model.config.num_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(name, model.config.num_layers)
        no_decay = p.ndim < 2 or "norm" in name
        group = groups.setdefault((depth, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr": lr * decay ** (top - depth)})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def freeze(model: nn.Module, embeddings: bool, layers: int) -> int:
    """Set ``requires_grad=False`` on the embeddings (if asked, or when ``layers > 0``) and
    on the first ``layers`` encoder layers; return the number of frozen parameters."""
    if layers > model.config.num_layers:
        raise ConfigError(f"finetune.freeze_layers={layers} exceeds the model's "
                          f"{model.config.num_layers} layers")
    frozen = 0
    for name, p in model.named_parameters():
        depth = layer_depth(name, model.config.num_layers)
        if (depth == 0 and (embeddings or layers > 0)) or 1 <= depth <= layers:
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen
