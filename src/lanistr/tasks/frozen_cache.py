"""Frozen lower layers computed once: a cache of the hidden states after encoder layer k.

With the embeddings and the first ``k`` encoder layers frozen and run without dropout (as at
inference), their output for an example is the same in every epoch. So it is computed once
per example (training and held-out data) and the training steps and evaluations run only the
layers above ``k``: ``model.logits_from_layer(cached, mask, k)`` gives the same logits and the
same gradients as ``model(ids, mask, types).logits`` with those layers frozen in eval mode
(tested in ``tests/test_finetune_speed.py``).

The cache holds every real token's ``hidden_size`` float32 vector: ``4 x hidden x tokens``
bytes (MiniLM-L6 on 20 Newsgroups at 256 tokens, 11,293 posts of 181 tokens or more: 3.06 GB
measured, at most 11,293 x 256 x 384 x 4 = 4.4 GB).
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from lanistr.precision import autocast
from lanistr.tasks.labelled import Encoded, length_batches, pad_batch

log = logging.getLogger("lanistr")


class FrozenCache:
    """Per example of one :class:`Encoded` set, its ``(n_tokens, D)`` states after layer ``k``."""

    def __init__(self, states: list[torch.Tensor], num_layers: int):
        self.states, self.num_layers = states, num_layers

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states)

    def rows(self, indices) -> torch.Tensor:
        """The batch's real-token states in the encoder's flat order: (N, D)."""
        return torch.cat([self.states[i] for i in indices], 0)


@torch.no_grad()
def compute_cache(model: nn.Module, data: Encoded, num_layers: int, pad_id: int,
                  batch_size: int = 32, precision: str = "fp32") -> FrozenCache:
    """Run the embeddings and the first ``num_layers`` layers once over ``data`` (eval mode,
    batches of similar length so little is padded, in the training's ``precision``: the
    cached states are what the training steps would compute); returns the states per
    example, in float32."""
    encoder = model.model.encoder
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    states: list[torch.Tensor | None] = [None] * len(data)
    for pick in length_batches(data.ids, batch_size):
        batch = pad_batch([data.ids[i] for i in pick], pad_id,
                          None if data.types is None else [data.types[i] for i in pick])
        with autocast(precision, device):
            x, _ = encoder.lower(batch["input_ids"].to(device),
                                 batch["attention_mask"].to(device),
                                 batch["token_type_ids"].to(device), num_layers)  # (N, D)
        x = x.float()
        lengths = batch["attention_mask"].sum(1).tolist()
        for i, part in zip(pick, torch.split(x, lengths, 0)):
            states[i] = part.clone()
    model.train(was_training)
    return FrozenCache(states, num_layers)


def attach(task, model: nn.Module, num_layers: int, precision: str = "fp32") -> None:
    """Cache the first ``num_layers`` layers' output for the task's training and held-out
    data; from then on the task's batches carry ``frozen_hidden`` and its logits come from
    the layers above (see :meth:`FinetuneTask.collate`)."""
    t = time.perf_counter()
    pad = task.tokenizer.pad_id
    task.train_cache = compute_cache(model, task.train_data, num_layers, pad, precision=precision)
    task.eval_cache = (compute_cache(model, task.eval_data, num_layers, pad, precision=precision)
                       if task.eval_data is not None else None)
    total = task.train_cache.nbytes + (task.eval_cache.nbytes if task.eval_cache else 0)
    log.info("frozen layers: the output of the embeddings + %d layers is computed once and "
             "cached (%.2f GB, %.0f s, in %s); training runs the %d layers above it", num_layers,
             total / 1e9, time.perf_counter() - t, precision,
             model.config.num_layers - num_layers)


def maybe_attach(task, model: nn.Module, freeze_layers: int, enabled: bool, ctx,
                 precision: str = "fp32") -> bool:
    """:func:`attach` where it applies: layers frozen, ``finetune.cache_frozen`` on, a model
    that can start from a layer (not the hierarchical one), one process (under DDP the
    wrapped model must run whole)."""
    if not (enabled and freeze_layers and hasattr(model, "logits_from_layer")):
        return False
    if ctx.enabled:
        log.info("finetune.cache_frozen: not used under torchrun (the frozen layers are "
                 "recomputed every step)")
        return False
    attach(task, model, freeze_layers, precision)
    return True
