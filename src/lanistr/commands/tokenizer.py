"""``lanistr tokenizer``: train a WordPiece vocabulary, or show how a text is tokenised."""

from __future__ import annotations

from lanistr.commands import add_progress_args, positive_int, progress_enabled

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenizer",
        help="train a WordPiece tokenizer or encode a text with one",
        description="Train a BERT-style WordPiece tokenizer on text files, or show the tokens "
        "and ids of a text.",
    )
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)

    train = sub.add_parser(
        "train",
        help="train a WordPiece vocabulary on text files",
        description="Train a WordPiece vocabulary with special tokens [PAD] [UNK] [CLS] [SEP] "
        "[MASK] (ids 0..4). .txt files hold documents separated by blank lines; .jsonl files "
        "hold one record per line with a 'text' field. The same input always gives the same "
        "tokenizer.json. Writes tokenizer.json, vocab.txt and tokenizer_config.json.",
    )
    train.add_argument(
        "--input",
        "-i",
        nargs="+",
        required=True,
        metavar="FILE",
        help="training corpus files (.txt or .jsonl)",
    )
    train.add_argument(
        "--vocab-size",
        type=positive_int,
        required=True,
        metavar="N",
        help="largest vocabulary size, special tokens included",
    )
    train.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="directory to write the tokenizer to"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a tokenizer already in --output (never one inside a model directory)",
    )
    train.add_argument(
        "--no-lowercase",
        dest="lowercase",
        action="store_false",
        help="keep case and accents (cased model)",
    )
    train.add_argument(
        "--min-frequency",
        type=positive_int,
        default=2,
        metavar="N",
        help="least count of a pair for it to be merged (default: 2)",
    )
    add_progress_args(train)
    train.set_defaults(func=_train)

    encode = sub.add_parser(
        "encode",
        help="print the tokens and ids of a text",
        description="Print the WordPiece tokens and ids of TEXT (with [CLS]/[SEP]).",
    )
    encode.add_argument(
        "--tokenizer",
        "-t",
        required=True,
        metavar="DIR",
        help="directory with tokenizer.json or a BERT vocab.txt",
    )
    encode.add_argument("text", metavar="TEXT", help="the text to encode")
    encode.add_argument(
        "--pair", metavar="TEXT", help="a second text, encoded as [CLS] TEXT [SEP] PAIR [SEP]"
    )
    encode.add_argument(
        "--max-length",
        type=positive_int,
        default=512,
        metavar="N",
        help="cut the encoding to N tokens (default: 512)",
    )
    encode.set_defaults(func=_encode)


def _train(args) -> int:
    from lanistr.data.tokenizer import train_tokenizer

    check_tokenizer_output(args.output, args.overwrite)
    tokenizer = train_tokenizer(
        args.input,
        vocab_size=args.vocab_size,
        output_dir=args.output,
        lowercase=args.lowercase,
        min_frequency=args.min_frequency,
        show_progress=progress_enabled(args),
    )
    print(f"vocab size: {tokenizer.vocab_size}")
    print(f"saved: {tokenizer.source}")
    return 0


def check_tokenizer_output(path, overwrite: bool) -> None:
    """Before training: ``path`` must be a writable directory, not a model's (its weights
    are tied to its vocabulary), and hold no tokenizer unless ``overwrite``."""
    from pathlib import Path

    from lanistr.errors import LanistrError
    from lanistr.io import check_output_dir

    check_output_dir(path)
    if (Path(path) / "config.json").is_file():
        raise LanistrError(f"--output {path}: is a model directory (config.json); its weights "
                           "belong to its vocabulary, so a new tokenizer there would make the "
                           "model read wrong token ids: choose another directory")
    check_output_dir(path, overwrite, owned=TOKENIZER_FILES)


def _encode(args) -> int:
    from lanistr.data.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    batch = tokenizer.encode(
        [args.text], None if args.pair is None else [args.pair], max_length=args.max_length
    )
    ids = batch.input_ids[0].tolist()
    print("tokens: " + " ".join(tokenizer.convert_ids_to_tokens(ids)))
    print("ids:    " + " ".join(map(str, ids)))
    if batch.num_truncated:
        print(f"(cut to --max-length {args.max_length})")
    return 0
