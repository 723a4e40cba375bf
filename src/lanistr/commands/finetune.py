"""`lanistr finetune`: fine-tune an encoder for text classification or token tagging."""

from __future__ import annotations

from lanistr.commands import add_run_args, held_out_line, run_sets


def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune an encoder for classification or tagging",
        description=(
            "Fine-tune a LANISTR encoder. Config sections: `task` (classify | tag | seq2seq; "
            "seq2seq has its own data/finetune fields, see lanistr.tasks.seq2seq), `init` (a "
            "checkpoint dir: a pretraining output's model/, a `lanistr convert-hf` output, or "
            "`scratch` with a `model` section and data.tokenizer), `model` (config overrides, "
            "e.g. pooling: mean, dropout, use_pooler), `data` (train, eval, test files; "
            "eval_fraction; text_field, text_pair_field, label_field for JSONL/CSV/TSV; CoNLL "
            "files for tag; max_len; tokenizer), `finetune` (freeze_embeddings, freeze_layers, "
            "cache_frozen, head_init random|probe, layer_lr_decay, class_weights "
            "none|balanced, patience, metric, recipe auto|off) and `train` (the loop's "
            "settings). The default recipe (finetune.recipe: auto) fills in what the config "
            "does not say from the training data (learning rate, epochs, max_len and "
            "truncation, held-out share, frozen layers, pooling, class weights, the head "
            "warm-up), prints each choice with its reason and records it in run_config.yaml; "
            "what you set wins. With recipe: off, defaults where `train` does not say: epochs=3, "
            "batch_size=16, warmup_ratio=0.1, lr=5e-5 (5e-4 from scratch), precision=auto "
            "(bf16 autocast where the CPU or GPU computes bf16 natively, else fp32), "
            "evaluation once per epoch (group_by_length=true: batches of similar lengths, "
            "less padding, faster but measured to cost some accuracy). The label set is the "
            "sorted set of training labels. With held-out data the best model on "
            "finetune.metric is kept (default macro_f1 / entity_f1 / token_accuracy) and "
            "training stops after `patience` evaluations without gain."),
        epilog="example: lanistr finetune --config examples/finetune_spam.yaml "
               "--output runs/spam",
    )
    add_run_args(p, "examples/finetune_*.yaml", "data.max_len=256", no_truncate=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.tasks.finetune import finetune
    from lanistr.tasks.run_config import Seq2SeqRun, load_run

    run = load_run("finetune", args.config, run_sets(args), args.output, args.resume)
    result = finetune(run, args.output, resume=args.resume, truncate=not args.no_truncate)
    for path, (cut, total) in result.truncated.items():
        if cut:
            print(f"{path}: {cut} of {total} examples truncated to max_len")
    if result.eval_metrics:
        print(held_out_line(result.eval_metrics))
    if result.test_metrics:
        print(f"test ({result.test_metrics['data']}): " + format_headline(result.test_metrics))
    print(f"model saved in {result.model_dir} ({result.steps} steps, {result.stop_reason})")
    if isinstance(run, Seq2SeqRun):
        print(f"next: lanistr generate --model {result.model_dir} \"some text\", or "
              f"lanistr evaluate --model {result.model_dir} --data FILE")
    else:
        print(f"next: lanistr evaluate --model {result.model_dir} --data FILE, or "
              f"lanistr predict --model {result.model_dir} \"some text\"")
    return 0


def format_headline(metrics: dict) -> str:
    """The main numbers of an evaluation on one line."""
    keys = ("accuracy", "macro_f1", "token_accuracy", "entity_f1", "exact_match", "token_f1",
            "bleu")
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
