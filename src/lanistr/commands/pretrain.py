"""`lanistr pretrain`: masked-language-model (+ NSP) pretraining."""

from __future__ import annotations

from lanistr.commands import add_run_args, held_out_line, run_sets


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder with MLM (+ NSP) on raw text",
        description=(
            "Pretrain a LANISTR encoder with masked language modelling (and optionally "
            "next-sentence prediction). The config has sections `model` (a preset and/or "
            "fields), `data` (train/eval files, tokenizer or vocab_size, max_len, "
            "mlm_probability, whole_word_mask, nsp), `train` (batch_size, grad_accum, lr, "
            "warmup_steps, schedule, max_steps or max_minutes, eval_every, save_every, "
            "keep_last, precision fp32|bf16|auto, seed) and `init` (scratch or a checkpoint dir). "
            "Defaults (what learnt fastest per second on a 2-core CPU): the mini model with "
            "pre-norm blocks and no dropout, batches of 16, lr 1e-3 with 6% warm-up, "
            "precision auto (bf16 autocast where the CPU or GPU computes bf16 natively, "
            "else fp32; the run config records which); "
            "train.max_minutes alone makes the learning rate reach 0 exactly at that budget. "
            "Runs under torchrun for data-parallel training. Ctrl-C saves a checkpoint; "
            "`lanistr pretrain --output DIR --resume` continues it with the run's own config."),
        epilog="example: lanistr pretrain --set data.train=runs/corpus.txt "
               "--set train.max_minutes=60 --output runs/own",
    )
    add_run_args(p, "examples/", "train.lr=3e-4")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.tasks.pretrain import pretrain
    from lanistr.tasks.run_config import load_run

    run = load_run("pretrain", args.config, run_sets(args), args.output, args.resume)
    result = pretrain(run, args.output, resume=args.resume)
    if result.metrics:
        print(held_out_line(result.metrics))
    print(f"model saved in {result.model_dir}")
    return 0
