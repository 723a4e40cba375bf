"""`lanistr adapt dapt | domain-probe | dann`: transfer learning and domain adaptation."""

from __future__ import annotations

import argparse

from lanistr.commands import add_run_args, held_out_line, run_sets


def register(sub) -> None:
    p = sub.add_parser(
        "adapt", help="adapt a pretrained encoder to a new domain (DAPT, domain probe, DANN)",
        description=(
            "Domain adaptation of a pretrained encoder, on the same training loop as "
            "pretraining and fine-tuning. `dapt`: continued MLM pretraining on domain text "
            "(optionally extending the vocabulary). `domain-probe`: how well a linear head on "
            "frozen features tells two corpora apart (a measure of domain shift). `dann`: "
            "fine-tuning on labelled source data with a domain-adversarial head trained on "
            "source + unlabelled target data behind gradient reversal."),
    )
    cmds = p.add_subparsers(dest="adapt_command", metavar="SUBCOMMAND")
    _register_dapt(cmds)
    _register_probe(cmds)
    _register_dann(cmds)

    def usage(args) -> int:  # `lanistr adapt` without a subcommand
        p.print_help()
        return 1

    p.set_defaults(func=usage)


def _register_dapt(cmds) -> None:
    p = cmds.add_parser(
        "dapt", help="domain-adaptive pretraining: continue MLM on domain text",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Continue masked-language-model pretraining of an existing checkpoint (your own\n"
            "pretraining output, or a `lanistr convert-hf` model whose missing MLM head is\n"
            "initialised) on text of the target domain (.txt documents or .jsonl `text`).\n"
            "With --extend-vocab N the N most frequent domain words that are not in the\n"
            "vocabulary are added first: each new embedding row is the mean of the rows of the\n"
            "word's old word pieces. The extended model and tokenizer are written to\n"
            "OUTPUT/init, the adapted model (with its tokenizer) to OUTPUT/model.\n"
            "Config sections (all optional with these flags): init; data (train, eval,\n"
            "max_len=128, mlm_probability, whole_word_mask); train (defaults here: lr=1e-4,\n"
            "warmup_ratio=0.06, max_steps=1000); adapt (extend_vocab, min_word_count=2,\n"
            "unfreeze_every=0: with N > 0 only the MLM head trains for the first N steps, then\n"
            "one more encoder layer from the top every N steps, the embeddings last; use it\n"
            "when the head is new, so its random gradients do not disturb the encoder).\n"
            "Interrupt with Ctrl-C and continue exactly with --resume."),
        epilog="example: lanistr adapt dapt --init runs/minilm --corpus target.jsonl "
               "--extend-vocab 200 --set train.max_steps=300 --output runs/dapt",
    )
    p.add_argument("--init", help="checkpoint directory to start from (sets `init`)")
    p.add_argument("--corpus", nargs="+", metavar="FILE",
                   help="domain text: .txt (blank-line separated documents) or .jsonl with "
                        "a `text` field (sets data.train)")
    p.add_argument("--eval", nargs="+", metavar="FILE", help="held-out domain text (data.eval)")
    p.add_argument("--extend-vocab", type=int, metavar="N",
                   help="add the N most frequent missing domain words (adapt.extend_vocab)")
    add_run_args(p, "examples/adapt_dapt.yaml", "train.max_steps=300")
    p.set_defaults(func=run_dapt)


def _register_probe(cmds) -> None:
    p = cmds.add_parser(
        "domain-probe", help="measure domain shift: can frozen features tell two corpora apart?",
        description=(
            "Encode SOURCE and TARGET texts with the frozen encoder of MODEL (mean-pooled last "
            "layer), hold out a part of each (balanced: the same number of examples per "
            "domain), fit a linear domain head (logistic regression) on the rest and report "
            "its held-out accuracy (0.5 = the domains look alike to the model, 1.0 = fully "
            "separable) and the proxy A-distance 2(1 - 2 error). Files: .jsonl/.csv/.tsv "
            "(--text-field), .conll (sentences) or .txt (documents)."),
        epilog="example: lanistr adapt domain-probe --model runs/minilm --source "
               "source_train.jsonl --target target_train.jsonl",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer)")
    p.add_argument("--source", required=True, help="texts of the source domain")
    p.add_argument("--target", required=True, help="texts of the target domain")
    p.add_argument("--max-examples", type=int, default=1000,
                   help="examples per domain, at most (default: 1000)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="held-out part of each domain (default: 0.3)")
    p.add_argument("--max-len", type=int, default=128, help="tokens per text (default: 128)")
    p.add_argument("--text-field", default="text", help="text field of JSONL/CSV (default: text)")
    p.add_argument("--l2", type=float, default=1e-3,
                   help="L2 penalty of the logistic regression (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--save", metavar="DIR",
                   help="also write the probe as a LanistrForDomainClassification checkpoint")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.set_defaults(func=run_probe)


def _register_dann(cmds) -> None:
    p = cmds.add_parser(
        "dann", help="domain-adversarial fine-tuning (DANN) with unlabelled target data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Fine-tune on labelled source-domain data (task classify or tag, as `lanistr "
            "finetune`)\nwhile a domain head behind a gradient-reversal layer learns to tell "
            "source from unlabelled\ntarget examples, pushing the encoder towards features "
            "that do not reveal the domain.\nConfig sections: the fine-tuning ones (task, "
            "init, model, data, finetune, train; data.test\nis the labelled *target* test set, "
            "data.eval / eval_fraction are *source* held-out data for\nmodel selection) and "
            "`dann`: target (unlabelled target training file, required),\n"
            "target_max_examples (0 = all), domain_weight (1.0; 0 = source-only), max_lambda "
            "(1.0),\ngamma (10: reversal weight max_lambda * (2 / (1 + exp(-gamma p)) - 1), p = "
            "step / steps),\ndomain_lr_scale (10: the domain head's lr is train.lr x this), "
            "unfreeze_every (gradual\nunfreezing: one more layer from the top every N steps; "
            "0 = off).\nEach micro-batch holds batch_size source + batch_size "
            "target sequences. OUTPUT/model is the\nplain task model (domain head dropped), "
            "usable by `lanistr evaluate` and `lanistr predict`."),
        epilog="example: lanistr adapt dann --config examples/adapt_dann_comp_rec.yaml "
               "--output runs/dann",
    )
    add_run_args(p, "examples/adapt_dann_*.yaml", "dann.max_lambda=0.5", no_truncate=True)
    p.set_defaults(func=run_dann)


def run_dapt(args) -> int:
    from lanistr.tasks.adapt import dapt
    from lanistr.tasks.run_config import load_run

    sets = run_sets(args)
    if args.init:
        sets.append(f"init={args.init}")
    if args.corpus:
        sets.append("data.train=[" + ", ".join(_quote(f) for f in args.corpus) + "]")
    if args.eval:
        sets.append("data.eval=[" + ", ".join(_quote(f) for f in args.eval) + "]")
    if args.extend_vocab is not None:
        sets.append(f"adapt.extend_vocab={args.extend_vocab}")
    run = load_run("dapt", args.config, sets, args.output, args.resume)
    result = dapt(run, args.output, resume=args.resume)
    if result.metrics:
        print(held_out_line(result.metrics))
    print(f"adapted model saved in {result.model_dir} ({result.steps} steps, "
          f"{result.stop_reason})")
    return 0


def run_probe(args) -> int:
    from lanistr.io import write_json
    from lanistr.tasks.adapt import domain_probe

    result = domain_probe(args.model, args.source, args.target, max_examples=args.max_examples,
                          test_fraction=args.test_fraction, max_len=args.max_len,
                          seed=args.seed, l2=args.l2, text_field=args.text_field,
                          save=args.save)
    print(f"domain probe ({result['train_per_domain']} train + {result['test_per_domain']} "
          f"held-out examples per domain): held-out accuracy {result['accuracy']:.4f} "
          f"(train {result['train_accuracy']:.4f}), proxy A-distance "
          f"{result['proxy_a_distance']:.3f}")
    if args.json:
        write_json(args.json, result)
    if args.save:
        print(f"probe saved in {args.save}")
    return 0


def run_dann(args) -> int:
    from lanistr.commands.finetune import format_headline
    from lanistr.tasks.adapt import dann
    from lanistr.tasks.run_config import load_run

    run = load_run("dann", args.config, run_sets(args), args.output, args.resume)
    result = dann(run, args.output, resume=args.resume, truncate=not args.no_truncate)
    if result.eval_metrics:
        print(held_out_line(result.eval_metrics, "source held-out"))
    if result.test_metrics:
        print(f"target test ({result.test_metrics['data']}): "
              + format_headline(result.test_metrics))
    if result.domain_accuracy is not None:
        print(f"domain head accuracy on training pairs: {result.domain_accuracy:.4f} "
              "(0.5 = the domains look alike to the encoder)")
    print(f"model saved in {result.model_dir} ({result.steps} steps, {result.stop_reason}; "
          f"{result.target_examples} unlabelled target examples)")
    return 0


def _quote(path: str) -> str:
    """A path as a YAML flow-sequence item."""
    import json

    return json.dumps(path)
