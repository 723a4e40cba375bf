"""torch.distributed set-up for runs launched with ``torchrun`` (DDP).

Without torchrun's environment everything here is a no-op on one process, so the same
training code runs on a laptop and on several nodes.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lanistr.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place (identity on one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def reduce_dict(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum a dict of tensors over ranks, in one collective per dtype/shape group."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        flat = torch.cat([values[k].detach().double().reshape(-1) for k in keys])
        self.all_reduce_(flat)
        out, offset = {}, 0
        for k in keys:
            n = values[k].numel()
            out[k] = flat[offset:offset + n].reshape(values[k].shape)
            offset += n
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(name="auto") -> torch.device:
    """``auto`` (a CUDA GPU when there is one, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or a
    torch device -> a torch device; CUDA asked for on a machine without it is a ConfigError."""
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not re.fullmatch(r"cuda(:\d+)?", name):
        raise ConfigError(f"device={name!r}: choose cpu, cuda or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: this machine has no CUDA GPU that torch can use "
                          "(use cpu or auto)")
    return torch.device(name)


def setup(backend: str = "auto", timeout_s: float = 300.0, device: str = "auto") -> DistContext:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, ...).

    ``backend``: ``auto`` picks ``nccl`` when CUDA is available and ``gloo`` otherwise.
    A rank that dies makes collectives on the others fail within ``timeout_s`` (and torchrun
    tears the group down), so a run never hangs.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda (--device cuda): this machine has no CUDA GPU that "
                          "torch can use (use cpu or auto)")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=torch.device("cuda" if use_cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("train.dist_backend=nccl needs CUDA GPUs; use gloo (or auto) on CPU")
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
