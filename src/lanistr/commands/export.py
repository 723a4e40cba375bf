"""`lanistr export --format hf|onnx SRC OUT`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a lanistr checkpoint as a Hugging Face BERT directory or an ONNX model",
        description=(
            "Export a BERT-layout lanistr checkpoint (encoder, MLM, pretraining, classifier or "
            "tagger). --format hf writes a directory that transformers loads with its Auto "
            "classes (config.json with id2label, model.safetensors, tokenizer files). --format "
            "onnx writes OUT/model.onnx (inputs input_ids, attention_mask, token_type_ids; "
            "output logits, or last_hidden_state for an encoder; dynamic batch and sequence "
            "axes), the lanistr config.json, the tokenizer and export.json; `lanistr predict "
            "--runtime onnx --model OUT` runs it. A model the format cannot represent is "
            "refused with the config field that prevents it."),
    )
    p.add_argument("--format", required=True, choices=("hf", "onnx"), dest="fmt",
                   help="hf: Hugging Face BERT directory; onnx: ONNX model for onnxruntime")
    p.add_argument("src", help="lanistr checkpoint directory")
    p.add_argument("out", help="output directory (created; must be new or empty)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="onnx only: also write OUT/model.int8.onnx, dynamically quantized to "
                        "int8 weights by onnxruntime (use it with --model OUT/model.int8.onnx)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a non-empty directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.errors import LanistrError
    from lanistr.io import check_output_dir

    check_output_dir(args.out, what="OUT")  # a file there, or no permission: before any work

    if args.fmt == "hf":
        if args.quantize:
            raise LanistrError("--quantize applies to --format onnx only")
        from lanistr.export.hf import export_hf

        arch = export_hf(args.src, args.out, overwrite=args.overwrite)
        print(f"exported {args.src} -> {args.out} (Hugging Face {arch})")
        return 0
    from lanistr.export.onnx import export_onnx

    info = export_onnx(args.src, args.out, quantize=args.quantize, overwrite=args.overwrite)
    files = ", ".join(info["files"].values())
    print(f"exported {args.src} -> {args.out} ({files}; inputs {', '.join(info['inputs'])}; "
          f"max |onnxruntime - torch| = {info['max_abs_diff']:.1e})")
    return 0
