"""What every training command shares: config resolution, distributed set-up, resume, and
writing the final model. Commands build a model and a :class:`~lanistr.tasks.task.Task`,
then call :func:`run_training`."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lanistr import precision, rundir
from lanistr.config import TrainConfig, dump_yaml
from lanistr.distributed import DistContext, setup, teardown
from lanistr.errors import CheckpointError
from lanistr.io import write_text
from lanistr.tasks.run_config import RunConfig
from lanistr.tasks.task import Task
from lanistr.tasks.trainer import Trainer, configure_logging

log = logging.getLogger("lanistr")


@dataclass
class RunResult:
    output_dir: Path
    model_dir: Path
    steps: int
    stop_reason: str
    metrics: dict


@dataclass
class FinetuneResult:
    model_dir: Path
    steps: int
    stop_reason: str
    eval_metrics: dict
    test_metrics: dict | None = None
    truncated: dict = field(default_factory=dict)  # file -> (truncated, total)


def eval_once_per_epoch(run: RunConfig, task, ctx) -> RunConfig:
    """Where the run config does not set ``train.eval_every``: evaluate once per epoch. Returns
    the run with the value filled in (so the saved run config says it)."""
    if not run.eval_every_epoch:
        return run
    train = run.train
    per_epoch = max(1, task.train_size() // (train.batch_size * ctx.world_size
                                             * train.grad_accum))
    return run.replace(train=dataclasses.replace(train, eval_every=per_epoch),
                       eval_every_epoch=False)


def start(train: TrainConfig, output_dir: Path) -> DistContext:
    """Set up the processes and the run's log; ``train.precision: auto`` becomes what it
    resolves to on this device (so the run config records it and a resume keeps it)."""
    ctx = setup(train.dist_backend, device=train.device)
    configure_logging(ctx, output_dir)
    train.precision = precision.resolve(train.precision, ctx.device)[0]
    return ctx


def run_training(model, task: Task, train: TrainConfig, output_dir: str | Path, ctx: DistContext,
                 *, resume: bool = False, run_config: dict | None = None) -> RunResult:
    """Train ``model`` on ``task``; write ``output_dir/model`` (the best model when the task
    has an eval metric, else the last) and return the final evaluation."""
    output_dir = Path(output_dir)
    trainer = Trainer(model, task, train, output_dir, ctx, run_config=run_config)
    lock = None
    try:
        if ctx.is_main:  # one writer per run directory (re-entrant: the CLI took it already)
            lock = rundir.acquire(output_dir)
        resumed = resume and trainer.resume()
        if resume and not resumed:
            raise CheckpointError(f"--resume: {output_dir} holds no checkpoint "
                                  f"({trainer.checkpoint_root}/step-*); nothing to continue "
                                  "(start a new run without --resume)")
        # before anything is written: a refused run leaves the other run's files as they were
        trainer.prepare_output(resumed, replace=resume or train.overwrite_output)
        if ctx.is_main and run_config is not None:
            write_text(output_dir / "run_config.yaml", dump_yaml(run_config))
        state = trainer.fit()
        metrics = state.history[-1] if state.history else {}
        model_dir = output_dir / "model"
        best = output_dir / "best"
        if ctx.is_main:
            if task.best_metric and best.is_dir():
                import shutil

                from lanistr.io import atomic_path

                with atomic_path(model_dir) as tmp:
                    shutil.copytree(best, tmp)
                metrics = next((h for h in state.history if h["step"] == state.best_step), metrics)
            else:
                trainer.save_model(model_dir)
            log.info("finished after %d steps (%s); model saved in %s", state.step,
                     trainer.stop_reason, model_dir)
        ctx.barrier()
        return RunResult(output_dir, model_dir, state.step, trainer.stop_reason,
                         {k: v for k, v in metrics.items() if k.startswith("eval_")})
    finally:
        if lock is not None:
            rundir.release(lock)
        teardown(ctx)
