"""The one training loop shared by pretraining, fine-tuning and domain adaptation.

A :class:`Task` says how to make batches and losses; the :class:`Trainer` does everything else:
AdamW with warmup + decay, clipping, gradient accumulation, optional bf16 autocast, DDP under
``torchrun``, progress bar and CSV/TensorBoard logs, evaluation at intervals, early stopping,
and checkpoints that resume *exactly*.

Exactness and scale-out rest on three rules:

* The data order is global: every epoch is a permutation of all examples seeded by
  ``(seed, epoch)``, and a step takes the next ``batch_size x world_size x grad_accum``
  examples (the *cursor* is stored in the checkpoint, not per rank). Each rank takes a
  disjoint slice, so any number of ranks sees the same global batch.
* Losses are sums divided by *global* counts (e.g. masked tokens in the whole global batch),
  so 2 ranks x batch B computes the same gradient as 1 rank x batch 2B.
* Randomness in batches (e.g. MLM masking) is seeded per example by the task, and the
  checkpoint carries every RNG state, the optimizer, the scheduler and the cursor.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanistr import precision
from lanistr.config import TrainConfig, to_dict
from lanistr.distributed import DistContext
from lanistr.errors import CheckpointError, ConfigError, TrainingError
from lanistr.io import atomic_path, failpoint, recover_atomic, write_json
from lanistr.tasks.schedule import lr_lambda, time_lr_factor
from lanistr.tasks.task import Batch, Task

log = logging.getLogger("lanistr")

#: ``train.schedule_by=time`` without max_steps or epochs: the budget alone ends the run
UNBOUNDED_STEPS = 2**62


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    cursor: int = 0  # examples of the current epoch already consumed (global)
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    skipped: int = 0  # non-finite batches skipped (train.skip_nonfinite)
    elapsed: float = 0.0  # seconds of training so far, over every resumed session
    history: list = field(default_factory=list)


class GlobalOrder:
    """Deterministic global example order: a permutation per epoch seeded by (seed, epoch).

    With ``lengths`` (each example's token count) the permutation is grouped by length, as
    ``group_by_length`` does in Hugging Face's Trainer: the shuffled order is cut into
    mega-batches of ``MEGA`` global batches, each sorted by length, and the global batches
    are then shuffled, so a batch pads its examples to a similar length. Which examples an
    epoch trains on (all but the same skipped remainder) does not change, only the batching."""

    MEGA = 50

    def __init__(self, size: int, seed: int, shuffle: bool = True,
                 lengths: np.ndarray | None = None, group: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.lengths, self.group = lengths, group
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                self._perm = rng.permutation(self.size)
                if self.lengths is not None:
                    self._perm = group_by_length(self._perm, self.lengths, self.group,
                                                 self.MEGA, rng)
            else:
                self._perm = np.arange(self.size)
            self._epoch = epoch
        return self._perm

    def next_batch(self, state: TrainState, global_batch: int) -> np.ndarray:
        """Indices of the next global batch; a remainder smaller than a batch is skipped
        (the next epoch's permutation differs, so every example is still seen)."""
        if global_batch > self.size:
            raise TrainingError(f"the global batch ({global_batch} examples) is larger than "
                                f"the training set ({self.size}); lower train.batch_size")
        if state.cursor + global_batch > self.size:
            state.epoch += 1
            state.cursor = 0
        idx = self.permutation(state.epoch)[state.cursor:state.cursor + global_batch]
        state.cursor += global_batch
        return idx


def group_by_length(perm: np.ndarray, lengths: np.ndarray, batch: int, mega: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``perm`` reordered so that each run of ``batch`` examples has similar lengths: every
    ``mega`` batches of it sorted longest first, then the batches shuffled by ``rng``. The
    remainder after the last whole batch stays at the end, as it was."""
    whole = len(perm) - len(perm) % batch
    head = perm[:whole].copy()
    step = batch * mega
    for start in range(0, whole, step):
        chunk = head[start:start + step]
        head[start:start + step] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    blocks = head.reshape(-1, batch)[rng.permutation(whole // batch)]
    return np.concatenate([blocks.reshape(-1), perm[whole:]])


def padded_fraction(perm: np.ndarray, lengths: np.ndarray, batch: int) -> float:
    """The fraction of the tokens of an epoch in ``perm``'s order, in batches of ``batch``
    padded to their longest, that is padding."""
    whole = len(perm) - len(perm) % batch
    blocks = lengths[perm[:whole]].reshape(-1, batch)
    padded = float(blocks.max(axis=1).sum() * batch)
    return 1.0 - float(blocks.sum()) / padded if padded else 0.0


class _StopFlag:
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) sets a flag; the loop saves a
    checkpoint at the next step boundary and stops."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

    def __init__(self):
        self.requested = False
        self.signum = 0
        self._old: dict = {}

    def __enter__(self):
        if _in_main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C aborts at once
            raise interrupted(signum)
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def interrupted(signum: int) -> KeyboardInterrupt:
    """The KeyboardInterrupt a stopped run raises; ``signum`` tells SIGINT from SIGTERM."""
    exc = KeyboardInterrupt()
    exc.signum = int(signum) or 2  # type: ignore[attr-defined]
    return exc


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class Trainer:
    def __init__(self, model: nn.Module, task: Task, train: TrainConfig, output_dir: str | Path,
                 ctx: DistContext | None = None, *, run_config: dict | None = None,
                 clock=None):
        """``clock`` (default ``time.perf_counter``) measures the training time that a
        budgeted schedule (``train.schedule_by=time``) follows; tests pass a fake one."""
        self.model = model
        self.task = task
        self.train = train
        self.output_dir = Path(output_dir)
        self.ctx = ctx or DistContext()
        self.run_config = run_config or {}
        self.state = TrainState()
        self.global_batch = train.batch_size * self.ctx.world_size * train.grad_accum
        lengths = task.example_lengths()
        # None: train.group_by_length changes nothing (e.g. packed sequences)
        self._lengths = None if lengths is None else np.asarray(lengths)
        self.order = GlobalOrder(task.train_size(), train.seed,
                                 lengths=self._lengths if train.group_by_length else None,
                                 group=self.global_batch)
        self.precision = precision.resolve(train.precision, self.ctx.device)[0]
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        torch.manual_seed(train.seed)
        self.model.to(self.ctx.device)
        self.ddp = self._wrap(model)
        self.optimizer = torch.optim.AdamW(task.param_groups(model, train), lr=train.lr,
                                           betas=tuple(train.adam_betas), eps=train.adam_eps)
        self.total_steps = self._total_steps()
        self.clock = clock or time.perf_counter
        self.by_time = train.schedule_by == "time"
        self._fraction = 0.0  # of the time budget used, as of the last clock reading
        self._session = (0.0, 0.0)  # (clock, state.elapsed) when this session's loop began
        schedule = ((lambda _step: time_lr_factor(train, self._fraction)) if self.by_time
                    else lr_lambda(train, self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.stop_reason = ""
        self._tb = None

    # -- setup ---------------------------------------------------------------------------------

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        from lanistr.nn.models import PreTrainedModel

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        # The per-step search for unused parameters (a graph traversal) only where the model
        # may really leave one unused (e.g. an MLM model's pooler); see uses_every_parameter.
        every = isinstance(model, PreTrainedModel) and model.uses_every_parameter
        return DDP(model, device_ids=ids, find_unused_parameters=not every)

    def _total_steps(self) -> int:
        """One rule: the run stops at the first bound it reaches, ``train.max_steps`` (0 = none)
        or ``train.epochs`` (0 = none) (or ``train.max_minutes``, checked as it goes);
        ``self.step_bound`` names the step bound for the stop reason."""
        steps, self.step_bound = self.train.max_steps, f"max_steps={self.train.max_steps}"
        if self.train.schedule_by == "time" and not steps and not self.train.epochs:
            self.step_bound = f"max_minutes={self.train.max_minutes:g}"
            return UNBOUNDED_STEPS
        if self.train.epochs:
            per_epoch = max(1, self.task.train_size() // self.global_batch)
            by_epochs = math.ceil(self.train.epochs * per_epoch)
            if not steps or by_epochs < steps:
                if steps and self.ctx.is_main:
                    log.warning("train.epochs=%g ends the run after %d steps, before "
                                "train.max_steps=%d (the first bound stops it; set "
                                "train.epochs=0 to train by steps alone)", self.train.epochs,
                                by_epochs, steps)
                steps, self.step_bound = by_epochs, f"epochs={self.train.epochs:g}"
        if steps < 1:
            raise ConfigError("train.max_steps and train.epochs are both 0: give the run a "
                              "length (or train.max_minutes with train.schedule_by=time)")
        if self.train.schedule_by == "time" and self.ctx.is_main:
            log.warning("train.%s may end the run before its time budget "
                        "(train.max_minutes=%g), where the budgeted schedule reaches 0; set "
                        "train.max_steps=0 and train.epochs=0 to let the budget alone end it",
                        self.step_bound, self.train.max_minutes)
        return steps

    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> TrainState:
        train, ctx = self.train, self.ctx
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            log.info("global batch = %d per rank x %d ranks x %d accumulation = %d examples",
                     train.batch_size, ctx.world_size, train.grad_accum, self.global_batch)
            log.info("%s", precision.describe(self.precision, ctx.device))
            self._describe_order()
        if train.eval_at_start and self.state.step == 0:
            self._log({"step": 0, **self.evaluate()})  # the curve's starting point
        bar = self._progress()
        start = time.perf_counter()
        self._session = (self.clock(), self.state.elapsed)
        budget = 60.0 * train.max_minutes
        window_tokens, window_start = 0, time.perf_counter()
        with _StopFlag() as stop:
            while self.state.step < self.total_steps and not (
                    self.by_time and self.state.elapsed >= budget):  # a resumed finished run
                result = self._step()
                if result is None:  # a non-finite batch skipped (train.skip_nonfinite)
                    continue
                loss, tokens = result
                self.state.step += 1
                window_tokens += tokens
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / elapsed if elapsed > 0 else 0.0
                lr = self.scheduler.get_last_lr()[0]
                row = {"step": self.state.step, "loss": loss, "lr": lr, "tokens_per_s": tps}
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                if self.state.step % train.log_every == 0:
                    window_tokens, window_start = 0, time.perf_counter()
                done = self.state.step >= self.total_steps
                if self.by_time:  # the training time of every session, as the schedule saw it
                    out_of_time = self.state.elapsed >= budget
                else:
                    out_of_time = (train.max_minutes and
                                   time.perf_counter() - start > 60 * train.max_minutes)
                stop_now = self._agree(stop.requested or bool(out_of_time))
                if train.eval_every and (self.state.step % train.eval_every == 0 or done
                                         or stop_now):
                    row.update(self.evaluate())
                    if self._early_stop(row):
                        stop_now, self.stop_reason = True, "early stopping"
                self._log(row)
                if (train.save_every and self.state.step % train.save_every == 0) or done or stop_now:
                    self.save_checkpoint()
                if stop_now:
                    self.stop_reason = self.stop_reason or (
                        "interrupted" if stop.requested
                        else f"time budget reached (max_minutes={train.max_minutes:g})")
                    break
        if bar is not None:
            bar.close()
        if self._tb is not None:
            self._tb.close()
        self.stop_reason = self.stop_reason or f"{self.step_bound} reached"
        if stop.requested and self.stop_reason == "interrupted":
            log.warning("interrupted at step %d; checkpoint saved in %s (continue with --resume)",
                        self.state.step, self.latest_checkpoint())
            raise interrupted(stop.signum)
        return self.state

    def _describe_order(self) -> None:
        if self._lengths is None:
            return
        b, epoch = self.train.batch_size, self.state.epoch
        shuffled = padded_fraction(GlobalOrder(len(self._lengths), self.train.seed)
                                   .permutation(epoch), self._lengths, b)
        if self.order.lengths is None:
            log.info("batches shuffled: %.0f%% of their tokens are padding (train."
                     "group_by_length: true pads less, faster but measured to cost some "
                     "accuracy)", 100 * shuffled)
            return
        grouped = padded_fraction(self.order.permutation(epoch), self._lengths, b)
        log.info("batches grouped by length (train.group_by_length): %.0f%% of the tokens "
                 "are padding (%.0f%% in shuffled batches)", 100 * grouped, 100 * shuffled)

    def _agree(self, flag: bool) -> bool:
        """Every rank stops together if any rank wants to."""
        if not self.ctx.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.ctx.device)
        return bool(self.ctx.all_reduce_(t).item() > 0)

    def _micro_batches(self) -> list[Batch]:
        idx = self.order.next_batch(self.state, self.global_batch)
        b, world, rank = self.train.batch_size, self.ctx.world_size, self.ctx.rank
        out = []
        for a in range(self.train.grad_accum):
            chunk = idx[(a * world + rank) * b:(a * world + rank + 1) * b]
            batch = self.task.collate(chunk.tolist(), self.state.epoch)
            out.append({k: v.to(self.ctx.device) if torch.is_tensor(v) else v
                        for k, v in batch.items()})
        return out

    def _step(self) -> tuple[float, int] | None:
        """One optimizer step; None when its batch was skipped as non-finite."""
        ctx, model = self.ctx, self.ddp
        model.train()
        self.task.on_step(self.state.step, self.total_steps)
        micro = self._micro_batches()
        # Global normalisers, known before any forward: the loss is sum / global count.
        counts: dict[str, float] = {}
        for batch in micro:
            for k, v in self.task.counts(batch).items():
                counts[k] = counts.get(k, 0.0) + float(v)
        keys = sorted(counts)
        totals = ctx.reduce_dict({k: torch.tensor(counts[k], dtype=torch.float64) for k in keys})
        totals = {k: max(float(v), 1.0) for k, v in totals.items()}
        loss_sums = {k: 0.0 for k in keys}
        tokens = 0
        for i, batch in enumerate(micro):
            sync = i == len(micro) - 1
            no_sync = model.no_sync() if (ctx.enabled and not sync) else contextlib.nullcontext()
            with no_sync, self._autocast():
                sums = self.task.loss_sums(model, batch)
                loss = sum(sums[k] / totals[k] for k in sums) * ctx.world_size
            if self._agree(not bool(torch.isfinite(loss.detach()).all())):
                terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in sums.items())
                return self._non_finite(f"non-finite loss ({terms})")
            loss.backward()
            for k in sums:
                loss_sums[k] += float(sums[k].detach())
            tokens += self.task.num_tokens(batch)
        reduced = ctx.reduce_dict({k: torch.tensor(v, dtype=torch.float64)
                                   for k, v in loss_sums.items()})
        total_loss = sum(float(reduced[k]) / totals[k] for k in reduced)
        # (gradients are all-reduced by now: every rank sees the same norm)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.train.max_grad_norm or float("inf"))
        if not torch.isfinite(norm):
            return self._non_finite(f"non-finite gradients (loss {total_loss:.4g}, gradient "
                                    f"norm {float(norm)})")
        backup = self._backup() if self._skips_left() else None
        self.optimizer.step()
        if not self._weights_finite():
            if backup is not None:
                self._restore(backup)
            return self._non_finite(f"non-finite weights after the update (loss "
                                    f"{total_loss:.4g}, gradient norm {float(norm):.4g})")
        self._tick()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = int(ctx.reduce_dict({"t": torch.tensor(float(tokens))})["t"])
        return total_loss, tokens

    def _tick(self) -> None:
        """Read the clock once per step: the training time so far (``state.elapsed``, kept in
        checkpoints, so a resumed run continues from it) and, for a budgeted schedule, the
        fraction of the budget the next step's learning rate follows. Under torchrun every
        rank takes rank 0's reading, so all ranks use the same learning rate."""
        clock0, elapsed0 = self._session
        elapsed = elapsed0 + (self.clock() - clock0)
        if self.ctx.enabled:
            t = torch.tensor([elapsed if self.ctx.is_main else 0.0], dtype=torch.float64,
                             device=self.ctx.device)
            elapsed = float(self.ctx.all_reduce_(t).item())
        self.state.elapsed = elapsed
        if self.by_time:
            self._fraction = elapsed / (60.0 * self.train.max_minutes)

    def _skips_left(self) -> int:
        return max(0, self.skip_nonfinite - self.state.skipped)

    @property
    def skip_nonfinite(self) -> int:
        return int(getattr(self.train, "skip_nonfinite", 0) or 0)

    def _non_finite(self, what: str) -> None:
        """A batch whose loss, gradients or update is not finite: nothing of it is applied.
        Skip it while ``train.skip_nonfinite`` allows (the weights and optimizer state stay
        those of the last finite step), else stop without saving."""
        self.optimizer.zero_grad(set_to_none=True)
        step = self.state.step + 1
        if self._skips_left():
            self.state.skipped += 1
            if self.ctx.is_main:
                log.warning("step %d: %s; batch skipped (%d of train.skip_nonfinite=%d)", step,
                            what, self.state.skipped, self.skip_nonfinite)
            return None
        last = self.last_finite_checkpoint()
        where = (f"; the last good checkpoint (verified finite) is {last}" if last else
                 "; no finite checkpoint was saved")
        advice = ["lower train.lr", "raise train.warmup_steps"]
        if not self.train.max_grad_norm:
            advice.append("set train.max_grad_norm=1.0")
        if self.precision != "fp32":
            advice.append("use train.precision=fp32")
        advice.append("or skip a few bad batches with train.skip_nonfinite=N")
        raise TrainingError(f"{what} at step {step}; training stopped without saving this "
                            f"step{where}. To fix, start again (--overwrite) and "
                            f"{', '.join(advice)}")

    def _weights_finite(self) -> bool:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return True
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def _backup(self) -> tuple[list[torch.Tensor], dict]:
        """The weights and optimizer state before an update (kept only while
        ``train.skip_nonfinite`` may still skip one)."""
        import copy

        return ([p.detach().clone() for p in self.model.parameters()],
                copy.deepcopy(self.optimizer.state_dict()))

    def _restore(self, backup) -> None:
        weights, optim = backup
        with torch.no_grad():
            for p, saved in zip(self.model.parameters(), weights):
                p.copy_(saved)
        self.optimizer.load_state_dict(optim)

    def _autocast(self):
        return precision.autocast(self.precision, self.ctx.device)

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        for n, batch in enumerate(self.task.eval_batches(self.ctx.rank, self.ctx.world_size)):
            if self.train.eval_batches and n >= self.train.eval_batches:
                break
            batch = {k: v.to(self.ctx.device) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            with self._autocast():
                for k, v in self.task.eval_sums(self.model, batch).items():
                    v = v.detach().double().cpu()
                    sums[k] = sums[k] + v if k in sums else v
        sums = self._reduce_eval(sums)
        self.model.train(was_training)
        if not sums:
            return {}
        return {f"eval_{k}": v for k, v in self.task.finalize_metrics(sums).items()}

    def _reduce_eval(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.ctx.enabled:
            return sums
        # Ranks may hold different key sets if a shard is empty: agree on the keys first.
        import torch.distributed as dist

        names: list = [None] * self.ctx.world_size
        dist.all_gather_object(names, {k: tuple(v.shape) for k, v in sums.items()})
        shapes = {k: s for d in names for k, s in d.items()}
        full = {k: sums.get(k, torch.zeros(s, dtype=torch.float64)) for k, s in shapes.items()}
        return self.ctx.reduce_dict(full)

    def _early_stop(self, row: dict) -> bool:
        name = self.task.best_metric
        key = f"eval_{name}" if name else None
        if key is None or key not in row:
            return False
        value = row[key]
        better = (self.state.best_value is None or
                  (value > self.state.best_value if self.task.greater_is_better
                   else value < self.state.best_value))
        if better:
            self.state.best_value, self.state.best_step, self.state.bad_evals = value, self.state.step, 0
            if self.ctx.is_main:
                self.save_model(self.output_dir / "best")
        else:
            self.state.bad_evals += 1
        patience = getattr(self.task, "patience", 0)
        return bool(patience and self.state.bad_evals >= patience)

    # -- logging -------------------------------------------------------------------------------

    def _progress(self):
        import sys

        if not (self.ctx.is_main and self.train.progress and sys.stderr.isatty()):
            return None
        from tqdm.auto import tqdm

        total = None if self.total_steps == UNBOUNDED_STEPS else self.total_steps
        return tqdm(total=total, initial=self.state.step, desc="train", unit="step",
                    dynamic_ncols=True)

    def _log(self, row: dict) -> None:
        if any(k.startswith("eval_") for k in row):
            self.state.history.append(row)
        if not self.ctx.is_main:
            return
        path = self.output_dir / "metrics.csv"
        fields = ["loss", "lr", "tokens_per_s"]
        extra = sorted(k for k in row if k not in fields and k != "step")
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", "name", "value"])
            for k in [f for f in fields if f in row] + extra:
                writer.writerow([row["step"], k, f"{row[k]:.6g}" if isinstance(row[k], float)
                                 else row[k]])
        if any(k.startswith("eval_") for k in row):
            log.info("step %d: %s", row["step"], ", ".join(
                f"{k}={row[k]:.4f}" for k in extra if isinstance(row[k], float)))
        tb = self._tensorboard()
        if tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, row["step"])

    def _tensorboard(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (extra `tb`)
                self._tb = False
                return None
            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._tb or None

    # -- checkpoints ---------------------------------------------------------------------------

    def save_model(self, directory: Path) -> None:
        """A usable model directory: weights + config + task files (tokenizer, labels)."""
        with atomic_path(directory) as tmp:
            self.model.save_pretrained(tmp)
            self.task.save_extra(tmp)

    def save_checkpoint(self) -> Path | None:
        """Model + optimizer + scheduler + RNGs + data cursor, written atomically (rank 0)."""
        path = self.checkpoint_root / f"step-{self.state.step:07d}"
        if self.ctx.is_main:
            from safetensors.torch import save_file

            tensors, meta = _flatten_optimizer(self.optimizer.state_dict())
            bad = [k for k, t in tensors.items() if t.is_floating_point()
                   and not bool(torch.isfinite(t).all())]
            if bad or not self._weights_finite():
                raise TrainingError(
                    f"step {self.state.step}: the {'optimizer state' if bad else 'weights'} "
                    f"{'(' + bad[0] + ') ' if bad else ''}are not finite; the checkpoint was not "
                    f"saved (the last good one is {self.last_finite_checkpoint()}). Lower "
                    "train.lr or raise train.warmup_steps")
            with atomic_path(path) as tmp:
                self.model.save_pretrained(tmp)
                failpoint("checkpoint.model")
                self.task.save_extra(tmp)
                failpoint("checkpoint.extra")
                tensors["rng.torch"] = torch.get_rng_state()
                save_file(tensors, str(tmp / "trainer_state.safetensors"))
                failpoint("checkpoint.trainer_state")
                write_json(tmp / "trainer_state.json", {
                    "finite": True,  # verified above: weights and optimizer state
                    "total_steps": self.total_steps,
                    "state": {k: v for k, v in vars(self.state).items() if k != "history"},
                    "optimizer": meta,
                    "scheduler": self.scheduler.state_dict(),
                    "python_random": _jsonable(random.getstate()),
                    "numpy_random": _jsonable(np.random.get_state()),
                    "world_size": self.ctx.world_size,
                    "train": to_dict(self.train),
                    "run_config": self.run_config,
                })
                failpoint("checkpoint.json")
            failpoint("checkpoint.saved")
            self._prune()
        self.ctx.barrier()
        return path

    def _prune(self) -> None:
        """Keep the newest ``keep_last`` checkpoints (all verified finite when saved). A
        checkpoint disappears at once (renamed, then deleted), never half."""
        ckpts = sorted(self.checkpoint_root.glob("step-*"))
        for old in ckpts[:-self.train.keep_last]:
            doomed = old.with_name(f".{old.name}.deleting")
            os.replace(old, doomed)
            failpoint("checkpoint.prune")
            shutil.rmtree(doomed, ignore_errors=True)

    def prepare_output(self, resumed: bool, replace: bool) -> None:
        """Make the output directory hold this run's history only. Resumed at step N: drop
        the rows of ``metrics.csv`` after N (logged by the interrupted run past its last
        checkpoint). A fresh start where another run left metrics or checkpoints: refuse
        (ConfigError) unless ``replace``, then remove them, so old checkpoints cannot
        outrank new ones and old metrics are not mixed into the new log."""
        metrics = self.output_dir / "metrics.csv"
        if resumed:
            if self.ctx.is_main and metrics.is_file():
                text = metrics.read_text(encoding="utf-8")
                if not text.endswith("\n"):  # a line cut by a crash
                    text = text[:text.rfind("\n") + 1]
                rows = list(csv.reader(text.splitlines()))
                kept = rows[:1] + [r for r in rows[1:] if len(r) == 3 and r[0].isdigit()
                                   and int(r[0]) <= self.state.step]
                if len(kept) < len(rows) or len(text) < metrics.stat().st_size:
                    with atomic_path(metrics) as tmp, tmp.open("w", newline="",
                                                               encoding="utf-8") as fh:
                        csv.writer(fh).writerows(kept)
            self.ctx.barrier()
            return
        previous = [p for p in (metrics, self.checkpoint_root, self.output_dir / "best",
                                self.output_dir / "tensorboard") if p.exists()]
        if not previous:
            return
        names = ", ".join(p.name for p in previous)
        if not replace:
            raise ConfigError(f"{self.output_dir} already holds a training run ({names}): "
                              "continue it with --resume, choose another --output, or "
                              "replace it with --overwrite")
        if self.ctx.is_main:
            log.warning("replacing the previous run in %s (%s)", self.output_dir, names)
            for p in previous:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        self.ctx.barrier()

    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted(p for p in self.checkpoint_root.glob("step-*")
                       if (p / "trainer_state.json").is_file())
        return ckpts[-1] if ckpts else None

    def last_finite_checkpoint(self) -> Path | None:
        """The newest checkpoint whose weights are finite (checked, not assumed)."""
        from lanistr.checkpoint import read_weights

        for path in reversed(sorted(p for p in self.checkpoint_root.glob("step-*")
                                    if (p / "trainer_state.json").is_file())):
            try:
                weights = read_weights(path)
            except CheckpointError:
                continue
            if all(bool(torch.isfinite(t).all()) for t in weights.values()
                   if t.is_floating_point()):
                return path
        return None

    def resume(self, path: Path | None = None) -> bool:
        """Restore everything from ``path`` (default: the latest checkpoint). Any number of
        ranks can resume a checkpoint written by any other number. Every unreadable file of
        the checkpoint is a :class:`CheckpointError` naming it; settings that would make the
        resumed run differ from an uninterrupted one are refused with the keys named."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from lanistr.checkpoint import load_state, read_weights

        if self.ctx.is_main:  # what a kill inside a save left behind
            for directory in (self.checkpoint_root, self.output_dir):
                for name in recover_atomic(directory):
                    log.info("removed %s left by an interrupted save", directory / name)
        self.ctx.barrier()
        path = path or self.latest_checkpoint()
        if path is None:
            return False
        current = path / "trainer_state.json"
        try:
            meta = json.loads(current.read_text(encoding="utf-8"))
            current = path / "trainer_state.safetensors"
            tensors = load_file(str(current))
            current = path / "trainer_state.json"
            saved_train = meta["train"]
            optim = _unflatten_optimizer(tensors, meta["optimizer"])
            scheduler, state = meta["scheduler"], meta["state"]
            python_random, np_state = _tuplify(meta["python_random"]), meta["numpy_random"]
            rng = tensors["rng.torch"]
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            reason = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{current}: unreadable ({reason}); the checkpoint is "
                                  f"damaged{_older_hint(path)}") from None
        self._check_same_plan(path, saved_train, meta.get("world_size", 1),
                              meta.get("total_steps"), int(state.get("step", 0)))
        load_state(self.model, read_weights(path), str(path))
        try:
            self.optimizer.load_state_dict(optim)
            self.scheduler.load_state_dict(scheduler)
            torch.set_rng_state(rng)
            random.setstate(python_random)
            np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32),
                                 *np_state[2:]))
        except (ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise CheckpointError(f"{path / 'trainer_state.json'}: does not fit this model "
                                  f"and optimizer ({exc}){_older_hint(path)}") from None
        for k, v in state.items():
            setattr(self.state, k, v)
        if self.ctx.is_main:
            log.info("resumed from %s at step %d (epoch %d, cursor %d)", path, self.state.step,
                     self.state.epoch, self.state.cursor)
        return True

    def _check_same_plan(self, path: Path, saved: dict, world_size: int,
                         saved_total: int | None, done: int) -> None:
        """Refuse to resume with settings under which the steps already taken would have
        been different: the learning rate of any of them, the global batch, the data order."""
        from lanistr.config import from_dict

        try:
            old = from_dict(TrainConfig, dict(saved), "train")
        except Exception:  # an older or edited trainer_state.json: nothing to compare
            return
        old_batch = old.batch_size * int(world_size) * old.grad_accum
        if saved_total is None:
            steps = old.max_steps
            if old.epochs:
                by_epochs = math.ceil(old.epochs * max(1, self.task.train_size() // old_batch))
                steps = min(steps, by_epochs) if steps else by_epochs
            saved_total = steps
        problems = []
        if old.schedule_by == "time" or self.by_time:  # the budget sets it, not the steps
            if any(getattr(old, k) != getattr(self.train, k) for k in
                   ("lr", "schedule_by", "schedule", "warmup_ratio", "max_minutes")):
                problems.append("the budgeted learning-rate schedule")
        elif old.lr != self.train.lr or any(
                lr_lambda(old, saved_total)(i) != lr_lambda(self.train, self.total_steps)(i)
                for i in range(done)):
            problems.append("the learning rate of the steps already taken")
        elif (self.total_steps != saved_total and self.train.schedule != "constant"
              and not self.by_time):
            problems.append(f"the {self.train.schedule} schedule, planned for {saved_total} "
                            f"steps, not {self.total_steps}")
        if old_batch != self.global_batch:
            problems.append(f"the global batch ({old_batch} examples, now {self.global_batch})")
        if old.seed != self.train.seed or (self._lengths is not None and
                                           old.group_by_length != self.train.group_by_length):
            problems.append("the data order")
        if not problems:
            return
        keys = ("lr", "schedule", "schedule_by", "max_minutes", "warmup_steps", "warmup_ratio",
                "max_steps", "epochs", "batch_size", "grad_accum", "seed", "group_by_length")
        differ = [f"train.{k}={getattr(self.train, k)} (checkpoint: {getattr(old, k)})"
                  for k in keys if getattr(old, k) != getattr(self.train, k)]
        if old_batch != self.global_batch and not any("batch" in d for d in differ):
            differ.append(f"{self.ctx.world_size} ranks (checkpoint: {world_size})")
        raise ConfigError(f"--resume from {path}: {', '.join(differ) or 'settings'} would "
                          f"change {'; '.join(problems)}, so the run would differ from an "
                          "uninterrupted one. Resume with the checkpoint's settings, or start a "
                          "new run (--overwrite)")


def _older_hint(path: Path) -> str:
    older = [p for p in sorted(path.parent.glob("step-*"))
             if p.name < path.name and (p / "trainer_state.json").is_file()]
    if older:
        return f"; remove {path} to resume from {older[-1]}"
    return ""


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain_state = {}, {}
    for pid, st in sd["state"].items():
        plain_state[str(pid)] = {}
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                plain_state[str(pid)][name] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain_state}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, plain in meta["plain"].items():
        state.setdefault(int(pid), {}).update(plain)
    return {"state": state, "param_groups": meta["param_groups"]}


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _tuplify(obj):
    if isinstance(obj, list):
        return tuple(_tuplify(x) for x in obj)
    return obj


def configure_logging(ctx: DistContext, output_dir: Path | None = None) -> None:
    """Rank 0 logs INFO to stderr (and ``train.log``); other ranks only warnings."""
    level = logging.INFO if ctx.is_main else logging.WARNING
    logger = logging.getLogger("lanistr")
    logger.setLevel(level)
    # One stream handler on the current stderr and at most one train.log: a second run in the
    # same process (the Python API, in-process CLI calls) neither writes into the first run's
    # log nor into a stderr that has been replaced (and maybe closed) since.
    for h in [h for h in logger.handlers if getattr(h, "_lanistr", None) == "file"]:
        logger.removeHandler(h)
        h.close()
    stream = next((h for h in logger.handlers if getattr(h, "_lanistr", None) == "stream"), None)
    if stream is None:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(message)s"))
        stream._lanistr = "stream"  # type: ignore[attr-defined]
        logger.addHandler(stream)
        logger.propagate = False
    else:  # not setStream: it flushes the old stream, which may be closed by now
        with stream.lock:
            stream.stream = sys.stderr
    if output_dir is not None and ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        fh._lanistr = "file"  # type: ignore[attr-defined]
        logger.addHandler(fh)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
