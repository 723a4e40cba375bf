"""`lanistr distill`: train a smaller student from a teacher (MiniLM relations, hidden states,
or a fine-tuned classifier's soft targets)."""

from __future__ import annotations

from lanistr.commands import add_run_args, held_out_line, run_sets


def register(sub) -> None:
    p = sub.add_parser(
        "distill", help="distil a teacher into a smaller student (general or task-specific)",
        description=(
            "Train a student encoder from a teacher model on the shared training loop (resumes "
            "exactly, runs under torchrun). Sections: `init` (the student: scratch, with a "
            "`model` preset and fields, default mini; or a checkpoint with the teacher's "
            "tokenizer), `distill` (teacher: a lanistr or converted model dir; mode: general = "
            "unlabelled text, the teacher's last-layer attention and value relations (MiniLM, "
            "attention_weight, value_weight, relation_heads) and/or hidden states through a "
            "learned projection (hidden_weight); mode: task = a fine-tuned classifier teacher's "
            "soft targets at temperature T (soft_weight, KL x T^2) plus optional gold-label "
            "cross-entropy (hard_weight)), `data` (train: text files (general) or labelled "
            "examples (task); unlabelled: more text for task mode; eval; max_len) and `train`. "
            "OUTPUT/model is the student with the teacher's tokenizer: an encoder to fine-tune, "
            "or (task mode) a classifier with the teacher's labels for `lanistr predict`."),
        epilog="example: lanistr distill --set distill.teacher=runs/minilm --set "
               "data.train=corpus.txt --set model.num_layers=3 --output runs/student",
    )
    add_run_args(p, "the README's Distillation section", "distill.teacher=runs/minilm")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.tasks.distill import distill
    from lanistr.tasks.run_config import load_run

    run = load_run("distill", args.config, run_sets(args), args.output, args.resume)
    result = distill(run, args.output, resume=args.resume)
    if result.metrics:
        print(held_out_line(result.metrics))
    print(f"student saved in {result.model_dir}")
    return 0
