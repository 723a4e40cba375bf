"""``lanistr tokenizer``: train a WordPiece vocabulary, or show how a text is tokenised."""

from __future__ import annotations


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
        type=int,
        required=True,
        metavar="N",
        help="largest vocabulary size, special tokens included",
    )
    train.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="directory to write the tokenizer to"
    )
    train.add_argument(
        "--no-lowercase",
        dest="lowercase",
        action="store_false",
        help="keep case and accents (cased model)",
    )
    train.add_argument(
        "--min-frequency",
        type=int,
        default=2,
        metavar="N",
        help="least count of a pair for it to be merged (default: 2)",
    )
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
        type=int,
        default=512,
        metavar="N",
        help="cut the encoding to N tokens (default: 512)",
    )
    encode.set_defaults(func=_encode)


def _train(args) -> int:
    from lanistr.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(
        args.input,
        vocab_size=args.vocab_size,
        output_dir=args.output,
        lowercase=args.lowercase,
        min_frequency=args.min_frequency,
    )
    print(f"vocab size: {tokenizer.vocab_size}")
    print(f"saved: {tokenizer.source}")
    return 0


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
