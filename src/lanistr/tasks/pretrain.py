"""Masked-language-model (+ optional next-sentence) pretraining."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from lanistr.config import LanistrConfig
from lanistr.data.pretraining import MLMCollator, NSPDataset, PackedDataset, build_token_cache
from lanistr.data.tokenizer import Tokenizer, train_tokenizer
from lanistr.distributed import DistContext
from lanistr.errors import ConfigError
from lanistr.tasks.run_config import PretrainDataConfig, PretrainRun, parse_run
from lanistr.tasks.task import Task

log = logging.getLogger("lanistr")

IGNORE = -100
EVAL_EPOCH = 2**31 - 1


class MLMTask(Task):
    """MLM loss over masked positions (sparse head: logits only where predicted), plus NSP."""

    best_metric = None
    unfreezing = None  # a GradualUnfreezing schedule (continued pretraining), applied per step

    def __init__(self, dataset, collator: MLMCollator, eval_dataset=None, eval_batch_size: int = 32,
                 eval_max_examples: int = 512, tokenizer: Tokenizer | None = None):
        self.dataset = dataset
        self.collator = collator
        self.eval_dataset = eval_dataset
        self.eval_batch_size = eval_batch_size
        self.eval_max_examples = eval_max_examples
        self.tokenizer = tokenizer

    def train_size(self) -> int:
        return len(self.dataset)

    def collate(self, indices, epoch):
        return self.collator([self.dataset[i] for i in indices], indices, epoch)

    def on_step(self, step: int, total_steps: int) -> None:
        if self.unfreezing is not None:
            self.unfreezing.apply(step)

    def counts(self, batch):
        out = {"mlm": float((batch["mlm_labels"] != IGNORE).sum())}
        if "nsp_labels" in batch:
            out["nsp"] = float(batch["nsp_labels"].numel())
        return out

    def _forward(self, model, batch):
        labels = batch["mlm_labels"]
        positions = labels != IGNORE
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    mlm_positions=positions)
        return out, labels[positions]

    def loss_sums(self, model, batch):
        out, targets = self._forward(model, batch)
        sums = {"mlm": F.cross_entropy(out.logits.float(), targets, reduction="sum")}
        if "nsp_labels" in batch:
            sums["nsp"] = F.cross_entropy(out.nsp_logits.float(), batch["nsp_labels"],
                                          reduction="sum")
        return sums

    def eval_batches(self, rank, world_size):
        if self.eval_dataset is None:
            return
        n = min(len(self.eval_dataset), self.eval_max_examples)
        mine = list(range(rank, n, world_size))
        for i in range(0, len(mine), self.eval_batch_size):
            idx = mine[i:i + self.eval_batch_size]
            # Fixed masks for evaluation, from an epoch number training never reaches.
            yield self.collator([self.eval_dataset[j] for j in idx], idx, EVAL_EPOCH)

    def eval_sums(self, model, batch):
        out, targets = self._forward(model, batch)
        logits = out.logits.float()
        sums = {"mlm_loss_sum": F.cross_entropy(logits, targets, reduction="sum"),
                "mlm_correct": (logits.argmax(-1) == targets).sum().double(),
                "mlm_count": torch.tensor(float(targets.numel()))}
        if "nsp_labels" in batch:
            sums["nsp_correct"] = (out.nsp_logits.argmax(-1) == batch["nsp_labels"]).sum().double()
            sums["nsp_count"] = torch.tensor(float(batch["nsp_labels"].numel()))
        return sums

    def finalize_metrics(self, sums):
        n = max(float(sums["mlm_count"]), 1.0)
        loss = float(sums["mlm_loss_sum"]) / n
        out = {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50.0)),
               "mlm_accuracy": float(sums["mlm_correct"]) / n}
        if "nsp_count" in sums:
            out["nsp_accuracy"] = float(sums["nsp_correct"]) / max(float(sums["nsp_count"]), 1.0)
        return out

    def save_extra(self, directory: Path) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)


def prepare_tokenizer(data: PretrainDataConfig, output_dir: Path, ctx: DistContext,
                      init_dir: str | None = None) -> Tokenizer:
    """The tokenizer named in the config, the one of the init checkpoint, or a new one trained
    on the training files (by rank 0; the other ranks wait and load it)."""
    source = data.tokenizer or init_dir
    if source:
        return Tokenizer.from_pretrained(source)
    target = output_dir / "tokenizer"
    if ctx.is_main and not (target / "tokenizer.json").is_file():
        log.info("training a WordPiece tokenizer (vocab %d) on %s", data.vocab_size,
                 ", ".join(data.train))
        train_tokenizer(data.train, data.vocab_size, target, lowercase=data.lowercase)
    ctx.barrier()
    return Tokenizer.from_pretrained(target)


def build_mlm_task(data: PretrainDataConfig, tokenizer: Tokenizer, output_dir: Path,
                   ctx: DistContext, seed: int, eval_batch_size: int,
                   progress: bool = True) -> MLMTask:
    """The MLM (+ NSP) task on ``data`` (tokenised once into a cache); ``progress=False``
    hides the tokenising bar (otherwise shown for large corpora on a terminal)."""
    if not data.train:
        raise ConfigError("data.train: no training files given (a list of .txt/.jsonl files)")
    cache_dir = Path(data.cache_dir) if data.cache_dir else output_dir / "cache"

    show = None if progress and sys.stderr.isatty() else False

    def dataset(files):
        if ctx.is_main:
            cache = build_token_cache(files, tokenizer, cache_dir, progress=show)
        ctx.barrier()
        if not ctx.is_main:
            cache = build_token_cache(files, tokenizer, cache_dir)
        return (NSPDataset(cache, data.max_len, seed=seed) if data.nsp
                else PackedDataset(cache, data.max_len))

    train_set = dataset(data.train)
    eval_set = dataset(data.eval) if data.eval else None
    collator = MLMCollator.for_tokenizer(tokenizer, mlm_probability=data.mlm_probability,
                                         whole_word_mask=data.whole_word_mask, seed=seed)
    if ctx.is_main:
        log.info("pretraining data: %d sequences of <= %d tokens%s", len(train_set), data.max_len,
                 f", {len(eval_set)} held-out" if eval_set is not None else "")
    return MLMTask(train_set, collator, eval_set, eval_batch_size, data.eval_max_examples,
                   tokenizer)


def build_mlm_model(model_section: dict, tokenizer: Tokenizer, data: PretrainDataConfig,
                    init: str | None):
    """A new MLM model from the config (vocab from the tokenizer), or one loaded from ``init``."""
    from lanistr.nn import LanistrForMaskedLM, LanistrForPreTraining

    cls = LanistrForPreTraining if data.nsp else LanistrForMaskedLM
    if init and init != "scratch":
        model = cls.from_pretrained(init)
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ConfigError(f"init {init}: model vocab_size={model.config.vocab_size} is "
                              f"smaller than the tokenizer's {tokenizer.vocab_size}")
        return model
    section = {"preset": "mini", **(model_section or {})}
    section.setdefault("vocab_size", tokenizer.vocab_size)
    section.setdefault("pad_token_id", tokenizer.pad_id)
    if data.nsp:
        section.setdefault("use_pooler", True)
    config = LanistrConfig.from_any(section)
    if config.position == "learned" and "max_len" not in section:
        # positions beyond the pretraining length would stay untrained: the model's max_len
        # says how far it was trained, so fine-tuning recipes never read longer texts
        config = config.replace(max_len=data.max_len)
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={config.vocab_size} is smaller than the "
                          f"tokenizer's vocabulary ({tokenizer.vocab_size})")
    if config.max_len < data.max_len:
        raise ConfigError(f"data.max_len={data.max_len} exceeds model.max_len={config.max_len}")
    return cls(config)


def pretrain(run: PretrainRun | dict, output_dir: str | Path, resume: bool = False):
    """Run pretraining from a run config dict (sections model, data, train, init)."""
    from lanistr.tasks.runner import run_training, start

    if isinstance(run, dict):
        run = parse_run("pretrain", run)
    output_dir = Path(output_dir)
    train, data = run.train, run.data
    ctx = start(train, output_dir)
    init = None if run.from_scratch else run.init
    tokenizer = prepare_tokenizer(data, output_dir, ctx, init)
    torch.manual_seed(train.seed)
    model = build_mlm_model(run.model, tokenizer, data, init)
    task = build_mlm_task(data, tokenizer, output_dir, ctx, train.seed, train.batch_size,
                          train.progress)
    if ctx.is_main:
        log.info("model: %s, %.2fM parameters", type(model).__name__, model.num_parameters() / 1e6)
    return run_training(model, task, train, output_dir, ctx, resume=resume,
                        run_config=run.to_dict())
