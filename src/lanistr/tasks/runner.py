"""What every training command shares: config resolution, distributed set-up, resume, and
writing the final model. Commands build a model and a :class:`~lanistr.tasks.trainer.Task`,
then call :func:`run_training`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lanistr import rundir
from lanistr.config import TrainConfig, apply_overrides, dump_yaml, from_dict, load_config_file
from lanistr.distributed import DistContext, setup, teardown
from lanistr.errors import CheckpointError, ConfigError
from lanistr.io import write_text
from lanistr.tasks.run_config import LR_PRETRAINED, LR_SCRATCH, TRAIN_DEFAULTS
from lanistr.tasks.trainer import Task, Trainer, configure_logging

log = logging.getLogger("lanistr")


def load_run_config(path: str | None, overrides: list[str] | None, sections: set[str],
                    defaults: dict | None = None) -> dict:
    """A run config: YAML file + ``--set`` overrides, restricted to known top-level sections."""
    data = load_config_file(path) if path else {}
    data = {**(defaults or {}), **data}
    apply_overrides(data, overrides)
    unknown = sorted(set(data) - sections)
    if unknown:
        raise ConfigError(f"{path or '--set'}: unknown section{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (valid: {', '.join(sorted(sections))})")
    return data


def train_config(data: dict) -> TrainConfig:
    return from_dict(TrainConfig, data.get("train") or {}, "train")


def train_section(run: dict, defaults: dict) -> dict:
    """The run's ``train`` section with a task's defaults filled in where it says nothing."""
    return {**defaults, **(run.get("train") or {})}


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


def default_train(pretrained: bool, defaults: dict = TRAIN_DEFAULTS,
                  lr: tuple[float, float] = (LR_PRETRAINED, LR_SCRATCH)) -> dict:
    """Training defaults of a fine-tuning run: a lower learning rate from a checkpoint."""
    return {**defaults, "lr": lr[0] if pretrained else lr[1]}


def start(train: TrainConfig, output_dir: Path) -> DistContext:
    ctx = setup(train.dist_backend)
    configure_logging(ctx, output_dir)
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
